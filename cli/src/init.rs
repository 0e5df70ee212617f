//! `kt init`: writes a starter `policy-config.yaml` and `tests/` from an embedded template.
//! Never overwrites a file without `--force`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use crate::output::{CliError, Exit, print_json};
use crate::templates::{TEMPLATES, find};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Starter pack to write (see --list-templates)
    #[arg(long, short = 't', default_value = "default", value_name = "NAME")]
    pub template: String,
    /// Directory to write into (created if missing)
    #[arg(long, default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
    /// List the templates and exit
    #[arg(long)]
    pub list_templates: bool,
    /// Machine-readable output for --list-templates and the files written
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: InitArgs) -> Result<Exit> {
    if args.list_templates {
        if args.json {
            print_json(
                &TEMPLATES
                    .iter()
                    .map(|t| json!({"name": t.name, "description": t.description}))
                    .collect::<Vec<_>>(),
            )?;
        } else {
            for t in TEMPLATES {
                println!("{:<28}{}", t.name, t.description);
            }
        }
        return Ok(Exit::Ok);
    }
    let Some(template) = find(&args.template) else {
        let names: Vec<&str> = TEMPLATES.iter().map(|t| t.name).collect();
        let mut err = CliError::new(Exit::Invalid, format!("unknown template '{}'", args.template));
        err = match kt_policy::diagnostics::did_you_mean(&args.template, names.iter().copied()) {
            Some(s) => err.hint(format!("did you mean '{s}'? (available: {})", names.join(", "))),
            None => err.hint(format!("available templates: {}", names.join(", "))),
        };
        return Err(err.into());
    };
    let mut files: Vec<(PathBuf, &str)> = vec![(args.dir.join("policy-config.yaml"), template.config)];
    files.extend(
        template
            .tests
            .iter()
            .map(|(name, body)| (args.dir.join("tests").join(name), *body)),
    );
    let existing: Vec<String> = files
        .iter()
        .filter(|(p, _)| p.exists())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if !existing.is_empty() && !args.force {
        return Err(
            CliError::new(Exit::Error, format!("refusing to overwrite {}", existing.join(", ")))
                .hint("pass --force to overwrite, or --dir to write somewhere else")
                .into(),
        );
    }
    std::fs::create_dir_all(args.dir.join("tests"))
        .with_context(|| format!("cannot create {}", args.dir.join("tests").display()))?;
    for (path, body) in &files {
        std::fs::write(path, body).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        print_json(
            &json!({"template": template.name, "files": files.iter().map(|(p, _)| p.display().to_string()).collect::<Vec<_>>()}),
        )?;
    } else {
        println!("Created {} from template '{}':", args.dir.display(), template.name);
        for (p, _) in &files {
            println!("  {}", p.display());
        }
        println!("\nNext:");
        if args.dir != std::path::Path::new(".") {
            println!("  cd {}", args.dir.display());
        }
        println!("  kt policy lint --file policy-config.yaml\n  kt policy test");
    }
    Ok(Exit::Ok)
}
