//! The module order in ARCHITECTURE.md holds: every `crate::` path in `src/` names a
//! module before its own in that order, and every module of `src/lib.rs` is in it.
//! No cluster needed.
use std::collections::HashMap;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The modules in the order ARCHITECTURE.md's fenced `order` block gives them.
fn order() -> HashMap<String, usize> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("ARCHITECTURE.md"))
        .expect("read ARCHITECTURE.md");
    let block = doc
        .split("```order")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("ARCHITECTURE.md has an ```order block");
    block
        .split_whitespace()
        .enumerate()
        .map(|(i, m)| (m.to_string(), i))
        .collect()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate roots and
/// the binary's own modules.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "cli")).then(|| name.to_string())
}

/// The modules a line of code names as `crate::module` (comments left out).
fn named(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or_default();
    code.match_indices("crate::")
        .filter(|(i, _)| {
            // `kordon::crate::` cannot occur; `$crate::` in macros can.
            !code[..*i].ends_with('$')
        })
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn every_module_uses_only_the_modules_before_it() {
    let order = order();
    let src = Path::new(ROOT).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let rank = *order
            .get(&module)
            .unwrap_or_else(|| panic!("src/{module} is not in ARCHITECTURE.md's order"));
        let text = std::fs::read_to_string(file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for used in named(line) {
                if used == module {
                    continue;
                }
                match order.get(&used) {
                    Some(&r) if r < rank => {}
                    _ => upward.push(format!(
                        "{}:{}: {module} uses {used}",
                        file.strip_prefix(ROOT).unwrap_or(file).display(),
                        n + 1
                    )),
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports against ARCHITECTURE.md's order:\n{}",
        upward.join("\n")
    );
}

#[test]
fn every_module_of_the_library_is_placed() {
    let order = order();
    let lib = std::fs::read_to_string(Path::new(ROOT).join("src/lib.rs")).expect("lib.rs");
    let missing: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .filter(|m| !order.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "not in ARCHITECTURE.md's order: {missing:?}"
    );
    assert_eq!(
        order.len(),
        lib.lines()
            .filter(|l| l.trim().starts_with("pub mod "))
            .count(),
        "ARCHITECTURE.md's order names a module src/lib.rs does not have"
    );
}
