//! Reading stage configs: TOML (or JSON) files into serde structs, with errors
//! that name the file and the offending field.

use crate::{Error, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Parse `path` as TOML (or JSON when it ends in `.json`) into `T`. Unknown keys
/// are rejected when `T` says `#[serde(deny_unknown_fields)]`, as every stage
/// config does, so a misspelt option is an error rather than silently ignored.
pub fn load_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_config(&text, path)
}

/// Parse config text; `path` names the source in errors and picks the format.
pub fn parse_config<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T> {
    if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(text).map_err(|e| Error::file(path, format!("line {}: {e}", e.line())))
    } else {
        toml::from_str(text).map_err(|e| Error::file(path, one_line(&e.to_string())))
    }
}

/// toml's messages span several lines with a source excerpt; keep them to one.
fn one_line(msg: &str) -> String {
    msg.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect::<Vec<_>>().join(" ")
}

/// Apply `key=value` overrides (dotted keys for nested tables) to a TOML
/// document before it is parsed, so every option of a config file can also be
/// set on the command line: `--set train.steps=200`.
pub fn apply_overrides(text: &str, overrides: &[String], path: &Path) -> Result<String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| Error::file(path, one_line(&e.to_string())))?;
    for item in overrides {
        let (key, value) = item.split_once('=').ok_or_else(|| Error::msg(format!("--set {item}: expected key=value (e.g. steps=200)")))?;
        let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        let parts: Vec<&str> = key.trim().split('.').collect();
        let mut table = &mut doc;
        for part in &parts[..parts.len() - 1] {
            let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().ok_or_else(|| Error::msg(format!("--set {item}: `{part}` is not a table")))?;
        }
        let last = parts[parts.len() - 1];
        // Switching a tagged enum's variant (`--set lr_schedule.kind=constant`) must not
        // carry over the old variant's fields: start the table afresh from its tag.
        if last == "kind" && parts.len() > 1 && table.get("kind").is_some_and(|old| *old != parsed) {
            table.clear();
        }
        table.insert(last.to_string(), parsed);
    }
    toml::to_string(&doc).map_err(|e| Error::msg(format!("--set: {e}")))
}

#[cfg(test)]
mod tests {
    use super::apply_overrides;
    use std::path::Path;

    #[test]
    fn switching_an_enum_variant_drops_the_old_variants_fields() {
        let text = "steps = 10\n[lr_schedule]\nkind = \"constant_with_warmup\"\nwarmup_steps = 500\n";
        let set = |o: &[&str]| {
            let o: Vec<String> = o.iter().map(|s| s.to_string()).collect();
            toml::from_str::<toml::Table>(&apply_overrides(text, &o, Path::new("x.toml")).unwrap()).unwrap()
        };
        let switched = set(&["lr_schedule.kind=constant"]);
        assert_eq!(switched["lr_schedule"].as_table().unwrap().len(), 1, "{switched}");
        let same = set(&["lr_schedule.kind=constant_with_warmup", "lr_schedule.warmup_steps=20"]);
        assert_eq!(same["lr_schedule"]["warmup_steps"].as_integer(), Some(20));
        assert_eq!(set(&["steps=3"])["steps"].as_integer(), Some(3));
    }
}
