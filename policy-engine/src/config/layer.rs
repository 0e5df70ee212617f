//! Layering of several configuration files (`--policy-config a --policy-config b`).
//!
//! Rule: mappings merge key by key, recursively; for any other value (scalars and lists,
//! including `policies.chain` and `providers.targets`) the later file replaces the earlier
//! one wholesale. A later `null` replaces too, which resets an optional section.

use serde_json::Value;

/// Merges `over` into `base` following the layering rule.
pub fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_merge_and_lists_are_replaced() {
        let mut base = json!({
            "pack": {"name": "base", "version": "1.0.0", "enabled": true},
            "policies": {"chain": ["prompt-injection", "pii-detector"]},
            "policy": {"pii-detector": {"action": "redact", "pci_mode": false}},
        });
        merge(
            &mut base,
            json!({
                "pack": {"version": "1.1.0"},
                "policies": {"chain": ["prompt-injection"]},
                "policy": {"pii-detector": {"action": "block"}},
            }),
        );
        assert_eq!(
            base,
            json!({
                "pack": {"name": "base", "version": "1.1.0", "enabled": true},
                "policies": {"chain": ["prompt-injection"]},
                "policy": {"pii-detector": {"action": "block", "pci_mode": false}},
            })
        );
    }

    #[test]
    fn null_resets_a_section() {
        let mut base = json!({"size_limits": {"max_body_bytes": 10}});
        merge(&mut base, json!({"size_limits": null}));
        assert_eq!(base, json!({"size_limits": null}));
    }
}
