//! The service keys that set a container's namespaces and host-level settings: `pid`,
//! `ipc` (checked here, typed by docker-compose-types), `mac_address` (of the service
//! and of each network) and `storage_opt` (which that crate lacks, so they are taken out
//! into [`ServiceExtras`]). Whether the
//! host powers among them are allowed is the policy's call (`config::policy`).

use serde_yaml::{Mapping, Value};

use super::{Context, ServiceExtras, key_str, scalar_text};
use crate::config::diagnostics::Diagnostics;

/// `ipc` modes besides another container's (`service:x`, `container:x`).
const IPC_MODES: &[&str] = &["none", "private", "shareable", "host"];

/// The container whose namespace a `service:x` / `container:x` mode shares, if it is one.
fn shared_with(mode: &str) -> Option<&str> {
    mode.strip_prefix("service:")
        .or_else(|| mode.strip_prefix("container:"))
}

/// Checks `pid` and `ipc`, and takes `mac_address` and `storage_opt` out of `service`.
pub(super) fn lift(
    ctx: &Context,
    name: &str,
    service: &mut Mapping,
    extras: &mut ServiceExtras,
    diags: &mut Diagnostics,
) {
    let path = |key: &str| format!("services.{name}.{key}");
    for (key, modes) in [("pid", &["host"][..]), ("ipc", IPC_MODES)] {
        let Some(value) = service.get(key) else {
            continue;
        };
        let ok = value.as_str().is_some_and(|mode| {
            modes.contains(&mode) || shared_with(mode).is_some_and(|other| !other.is_empty())
        });
        if !ok {
            let key_path = path(key);
            diags.push(ctx.error(
                &key_path,
                format!(
                    "`{key_path}` must be {}, `service:<name>` or `container:<name>`",
                    modes.join(", ")
                ),
                format!("e.g. `{key}: host` (the policy's `allow_host_{key}` decides whether a node may)"),
            ));
        }
    }
    let mut mac = |key_path: String, value: Value| -> Option<String> {
        let mac = value.as_str().filter(|mac| is_mac(mac)).map(str::to_string);
        if mac.is_none() {
            diags.push(ctx.error(
                &key_path,
                format!("`{key_path}` must be a MAC address"),
                "e.g. `mac_address: \"02:42:ac:11:00:02\"` (quoted: YAML 1.1 reads some unquoted as numbers)",
            ));
        }
        mac
    };
    if let Some(value) = service.remove("mac_address") {
        extras.mac_address = mac(path("mac_address"), value);
    }
    if let Some(Value::Mapping(networks)) = service.get_mut("networks") {
        for (key, settings) in networks.iter_mut() {
            let key = key_str(key);
            if let Some(value) = settings
                .as_mapping_mut()
                .and_then(|m| m.remove("mac_address"))
                && let Some(address) = mac(path(&format!("networks.{key}.mac_address")), value)
            {
                extras.network_macs.insert(key, address);
            }
        }
    }
    if let Some(value) = service.remove("storage_opt") {
        let options = value.as_mapping().and_then(|map| {
            map.iter()
                .map(|(k, v)| Some((key_str(k), scalar_text(v)?)))
                .collect::<Option<_>>()
        });
        match options {
            Some(options) => extras.storage_opt = options,
            None => {
                let key_path = path("storage_opt");
                diags.push(ctx.error(
                    &key_path,
                    format!("`{key_path}` must be a mapping of option to value"),
                    "e.g. `storage_opt: {size: 20G}`",
                ));
            }
        }
    }
}

/// Six pairs of hex digits separated by `:` (or `-`), as the engine parses it.
fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split([':', '-']).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_addresses_are_six_hex_pairs() {
        assert!(is_mac("02:42:ac:11:00:02"));
        assert!(is_mac("02-42-AC-11-00-02"));
        assert!(!is_mac("02:42:ac:11:00"));
        assert!(!is_mac("02:42:ac:11:00:0g"));
        assert!(!is_mac(""));
    }

    #[test]
    fn shared_namespaces_name_their_container() {
        assert_eq!(shared_with("service:db"), Some("db"));
        assert_eq!(shared_with("container:x"), Some("x"));
        assert_eq!(shared_with("host"), None);
    }
}
