//! A client nobody here wrote: the official `openai` and `anthropic` Python packages,
//! installed from PyPI into a virtualenv under the target directory, drive chat, streaming,
//! tools, embeddings, responses and error handling through `kt gateway run`
//! (fixtures/sdk/check_sdks.py). Needs `python3` with `venv` and access to PyPI; set
//! `KT_SKIP_SDK_TESTS=1` to skip (the test says so loudly).

use std::path::{Path, PathBuf};
use std::process::Command;

use kt_testkit::handlers::{anthropic_echo, openai_echo};
use kt_testkit::{GatewayProcess, MockProvider, config_dir};

const SUFFIX: &str = " - mail bob@example.com";

/// A virtualenv with both SDKs, created on first use.
fn sdk_python() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sdk-venv");
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import openai, anthropic"])
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return python;
    }
    let base = std::env::var("KT_PYTHON").unwrap_or_else(|_| "python3".into());
    let made = Command::new(&base)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {base} to create a virtualenv ({e}); install python3 or set KT_SKIP_SDK_TESTS=1")
        });
    assert!(
        made.success(),
        "`{base} -m venv` failed: install python3-venv, or set KT_SKIP_SDK_TESTS=1"
    );
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "openai>=1.50",
            "anthropic>=0.40",
        ])
        .status()
        .expect("pip runs");
    assert!(
        pip.success(),
        "pip could not install openai and anthropic from PyPI; set KT_SKIP_SDK_TESTS=1 to skip"
    );
    python
}

#[test]
fn official_python_sdks_work_through_the_gateway() {
    if std::env::var("KT_SKIP_SDK_TESTS").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED: official SDK tests (KT_SKIP_SDK_TESTS=1)");
        return;
    }
    let python = sdk_python();
    let openai = MockProvider::start(openai_echo(SUFFIX));
    let claude = MockProvider::start(anthropic_echo("k", SUFFIX));
    let yaml = format!(
        "pack: {{name: sdk, version: 1.0.0, enabled: true}}\npolicies: {{chain: [prompt-injection, pii-detector]}}\nproviders:\n  targets:\n    - {{id: oa, provider: openai-compatible, base_url: \"{}\", model: gpt-mock}}\n    - {{id: claude, provider: anthropic, base_url: \"{}\", api_key: k, model: claude-mock}}\n",
        openai.url, claude.url
    );
    let dir = config_dir(&yaml);
    let gw = GatewayProcess::start(env!("CARGO_BIN_EXE_kt"), dir.path(), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/sdk/check_sdks.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("http://{}", gw.addr))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "SDK checks failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("all SDK checks passed"), "{stdout}");
    eprintln!("{stdout}");
}
