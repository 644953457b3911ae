//! The module layers of `docs/design.md` ("Layers"), checked on the source: every `crate::X`
//! path in a module of the library names a module of a lower layer (or its own module). A new
//! module must be given a layer here and in the design document; an upward import fails.

use std::collections::BTreeMap;
use std::path::Path;

/// Layer of each top-level module, bottom first (as in docs/design.md).
const LAYERS: &[(&str, u32)] = &[
    ("sys", 0),
    ("sync", 0),
    ("cgroup", 0),
    ("units", 1),
    ("error", 2),
    ("process", 3),
    ("topology", 3),
    ("smaps", 3),
    ("populate", 3),
    ("snapshot", 3),
    ("shared", 3),
    ("baseline", 3),
    ("measure", 4),
    ("ledger", 4),
    ("plan", 4),
    ("topology_hwloc", 4),
    ("reservation", 5),
    ("fleet", 5),
    ("pool", 6),
    ("vmm", 6),
    ("bench", 7),
];

/// Upward edges that are known and left to their owners (docs/design.md says which).
const KNOWN: &[(&str, &str)] = &[];

/// Names re-exported at the crate root, with the module they come from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Error", "error"),
    ("Result", "error"),
    ("PolicyDenial", "error"),
    ("Reservation", "reservation"),
    ("ReservationBuilder", "reservation"),
    ("HostFacts", "reservation"),
    ("Topology", "topology"),
    ("ThpMode", "topology"),
    ("NodeId", "units"),
    ("PageSize", "units"),
    ("ParseError", "units"),
    ("Ledger", "ledger"),
];

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_imports_a_layer_above_its_own() {
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&root, &mut all);
    let mut bad = Vec::new();
    for f in all {
        let rel = f.strip_prefix(&root).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if top == "lib" || top == "bin" {
            continue;
        }
        let Some(&mine) = layer.get(top.as_str()) else {
            bad.push(format!(
                "{}: module {top} has no layer (add it here and in docs/design.md)",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(&f).unwrap();
        for (no, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let target = ROOT_ITEMS
                    .iter()
                    .find(|(item, _)| *item == name)
                    .map_or(name.as_str(), |(_, m)| m);
                let Some(&theirs) = layer.get(target) else {
                    continue; // a macro or an item of the root not listed: not a module edge
                };
                if target != top && theirs >= mine && !KNOWN.contains(&(top.as_str(), target)) {
                    bad.push(format!(
                        "{}:{}: {top} (layer {mine}) uses crate::{name} ({target}, layer {theirs})",
                        rel.display(),
                        no + 1
                    ));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "upward or sideways imports:\n{}",
        bad.join("\n")
    );
}
