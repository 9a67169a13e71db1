//! The controlplane's layering, checked against its own source files.
//!
//! Data flows one way: sources → intake → merge → overrides → compile → publish → snapshot server →
//! dataplanes. Each top-level module may import only what [`LAYERS`] lists for it, so a new edge against
//! the flow fails this test with the file and the path that made it, instead of quietly closing a cycle.
//! Inside every module, sibling submodules must not import each other in a circle either (unit tests
//! aside).
//!
//! The check reads the files as text: every `crate::…`, `super::…` and `self::…` path outside comments and
//! literals, `use` groups (`crate::{a, b::c}`) included, resolved to the module it names. A module adding a
//! path to a forbidden module, even in its unit tests, fails; so does a new top-level module missing from
//! [`LAYERS`], which is where a new stage says what it may use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The composition root (`lib.rs`): it may use everything, and only [`LAYERS`] entries naming it may use
/// its items (`crate::run_until`).
const ROOT: &str = "<crate root>";

/// Every top-level module and what it may import, lowest layer first. An entry may name a submodule
/// (`pipeline::intake`): then only that part of the module is allowed.
const LAYERS: &[(&str, &[&str])] = &[
    ("clock", &[]),
    ("model", &[]),
    ("pipeline", &["model", "clock"]),
    // Sources know the model and the intake's channel, nothing else of the pipeline.
    ("sources", &["model", "clock", "pipeline::intake"]),
    ("serve", &["model", "clock", "pipeline"]),
    ("api", &["model", "clock", "pipeline", "sources", "serve"]),
    (
        "startup",
        &["model", "clock", "pipeline", "sources", "serve", "api"],
    ),
    // Runs the whole controlplane (`crate::run_until`) beside a dataplane child.
    ("supervisor", &["startup", ROOT]),
];

/// This file: a test, not a layer.
const THIS_MODULE: &str = "layering";

type ModulePath = Vec<String>;

/// One path found in a file: the module whose code holds it, and the (absolute) path it names.
#[derive(Debug)]
struct Reference {
    file: PathBuf,
    from: ModulePath,
    to: ModulePath,
}

#[test]
fn top_level_modules_import_only_the_layers_below_them() {
    let crate_src = source_dir();
    let (references, modules) = scan(&crate_src);
    let layers: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut problems = Vec::new();

    let top_level: BTreeSet<&str> = modules
        .iter()
        .filter(|m| m.len() == 1)
        .map(|m| m[0].as_str())
        .filter(|m| *m != THIS_MODULE)
        .collect();
    for module in &top_level {
        if !layers.contains_key(module) {
            problems.push(format!(
                "top-level module `{module}` is not in LAYERS: say which layers it may import"
            ));
        }
    }

    for reference in &references {
        let Some(from) = reference.from.first() else {
            continue; // lib.rs composes every stage.
        };
        if from == THIS_MODULE {
            continue;
        }
        let to = match reference.to.first() {
            Some(first) if top_level.contains(first.as_str()) => first.as_str(),
            _ => ROOT,
        };
        if to == from {
            continue;
        }
        let allowed = layers.get(from.as_str()).copied().unwrap_or_default();
        let permitted = allowed.iter().any(|entry| {
            if *entry == ROOT {
                return to == ROOT;
            }
            let entry: Vec<&str> = entry.split("::").collect();
            reference.to.len() >= entry.len()
                && entry.iter().zip(&reference.to).all(|(a, b)| a == b)
        });
        if !permitted {
            problems.push(format!(
                "{}: `{from}` uses `crate::{}`, but may import only {allowed:?}",
                relative(&reference.file, &crate_src),
                reference.to.join("::"),
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_layers_and_every_folder_are_free_of_import_cycles() {
    let crate_src = source_dir();
    let (references, modules) = scan(&crate_src);
    // Edges between siblings: `a::x` using `a::y::…` is x → y inside `a`. Unit tests may reach sideways
    // for their fixtures (`startup::supervisor_args`'s tests parse the whole `Cli`): a cycle only through
    // tests does not tie the modules' code together, so tests count for the layers above, not here.
    let mut graphs: BTreeMap<ModulePath, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for reference in references
        .iter()
        .filter(|r| !r.from.iter().any(|m| m == "tests"))
    {
        let common = reference
            .from
            .iter()
            .zip(&reference.to)
            .take_while(|(a, b)| a == b)
            .count();
        let (Some(from), Some(to)) = (reference.from.get(common), reference.to.get(common)) else {
            continue; // A module using its parent or a child of its own.
        };
        let parent = reference.from[..common].to_vec();
        let mut target = parent.clone();
        target.push(to.clone());
        if !modules.contains(&target) {
            continue; // An item of the parent module (a re-export), not a sibling.
        }
        graphs
            .entry(parent)
            .or_default()
            .entry(from.clone())
            .or_default()
            .insert(to.clone());
    }
    let mut layers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, allowed) in LAYERS {
        let below = allowed
            .iter()
            .map(|entry| entry.split("::").next().unwrap_or(entry).to_string());
        layers.entry(module.to_string()).or_default().extend(below);
    }
    graphs.insert(vec![String::from("LAYERS")], layers);

    let cycles: Vec<String> = graphs
        .iter()
        .filter_map(|(parent, graph)| {
            let cycle = find_cycle(graph)?;
            let place = if parent.is_empty() {
                "the crate root".to_string()
            } else {
                parent.join("::")
            };
            Some(format!("import cycle in {place}: {}", cycle.join(" → ")))
        })
        .collect();
    assert!(cycles.is_empty(), "{}", cycles.join("\n"));
}

#[test]
fn one_module_style() {
    let crate_src = source_dir();
    let mut problems = Vec::new();
    for file in rust_files(&crate_src) {
        let code = strip_comments_and_literals(&std::fs::read_to_string(&file).unwrap());
        if code.contains("#[path") {
            problems.push(format!(
                "{}: #[path] attribute: put the module in its folder (unit tests in `tests.rs` there)",
                relative(&file, &crate_src)
            ));
        }
        if file.extension().is_some_and(|e| e == "rs")
            && file.file_stem().is_some_and(|s| s != "mod")
            && file.with_extension("").is_dir()
        {
            problems.push(format!(
                "{}: a file beside a folder of the same name: use the folder's mod.rs",
                relative(&file, &crate_src)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The first cycle found in `graph`, as the list of nodes around it (first node repeated at the end).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn relative(file: &Path, crate_src: &Path) -> String {
    let path = file.strip_prefix(crate_src).unwrap_or(file);
    format!("src/{}", path.display())
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Every path each library file names, and every module of the library (files and inline `mod x { }`).
fn scan(crate_src: &Path) -> (Vec<Reference>, BTreeSet<ModulePath>) {
    let mut references = Vec::new();
    let mut modules = BTreeSet::new();
    for file in rust_files(crate_src) {
        let relative = file.strip_prefix(crate_src).unwrap();
        if relative == Path::new("main.rs") {
            continue; // The binary's own crate root, not part of the library.
        }
        let mut module: ModulePath = relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(module.last().map(String::as_str), Some("mod" | "lib")) {
            module.pop();
        }
        for prefix in 1..=module.len() {
            modules.insert(module[..prefix].to_vec());
        }
        let code = strip_comments_and_literals(&std::fs::read_to_string(&file).unwrap());
        let tokens = tokenize(&code);
        for (from, path) in paths(&tokens, &module) {
            modules.insert(from.clone());
            if let Some(to) = resolve(&from, &path) {
                references.push(Reference {
                    file: file.clone(),
                    from,
                    to,
                });
            }
        }
    }
    (references, modules)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Glob,
    Other(char),
}

/// `code` with comments, string and character literals blanked out (line breaks kept).
fn strip_comments_and_literals(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let blank = |out: &mut String, text: &[char]| {
        out.extend(text.iter().map(|c| if *c == '\n' { '\n' } else { ' ' }));
    };
    while i < chars.len() {
        let rest = &chars[i..];
        let end = if rest.starts_with(&['/', '/']) {
            i + rest.iter().position(|c| *c == '\n').unwrap_or(rest.len())
        } else if rest.starts_with(&['/', '*']) {
            let mut depth = 0;
            let mut j = i;
            loop {
                if j + 1 >= chars.len() {
                    break chars.len();
                }
                if chars[j] == '/' && chars[j + 1] == '*' {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars[j + 1] == '/' {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break j;
                    }
                } else {
                    j += 1;
                }
            }
        } else if let Some(end) = raw_string_end(&chars, i) {
            end
        } else if chars[i] == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            (j + 1).min(chars.len())
        } else if chars[i] == '\'' && rest.get(1) == Some(&'\\') {
            // `'\n'`, `'\''`, `'\u{..}'`: the closing quote is the first one after the escaped character.
            let escaped = rest.get(3..).unwrap_or_default();
            i + 3 + escaped.iter().position(|c| *c == '\'').map_or(0, |p| p + 1)
        } else if chars[i] == '\'' && rest.get(2) == Some(&'\'') {
            i + 3
        } else {
            out.push(chars[i]);
            i += 1;
            continue;
        };
        blank(&mut out, &chars[i..end.min(chars.len())]);
        i = end.min(chars.len());
    }
    out
}

/// The end of a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) starting at `i`, if one starts there.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|c| **c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|c| **c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        i += 1;
        tokens.push(match c {
            ':' if chars.get(i) == Some(&':') => {
                i += 1;
                Token::PathSep
            }
            '{' => Token::Open,
            '}' => Token::Close,
            ',' => Token::Comma,
            '*' => Token::Glob,
            c if c.is_whitespace() => continue,
            c => Token::Other(c),
        });
    }
    tokens
}

/// Every path that starts with `crate`, `super` or `self`, with the module (file or inline) it is in.
fn paths(tokens: &[Token], file_module: &ModulePath) -> Vec<(ModulePath, ModulePath)> {
    let ident = |at: usize| match tokens.get(at) {
        Some(Token::Ident(name)) => Some(name.as_str()),
        _ => None,
    };
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) and the brace depth at which each opened.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if inline.last().is_some_and(|(_, at)| *at == depth) {
                    inline.pop();
                }
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some(name), Some(Token::Open)) = (ident(i + 1), tokens.get(i + 2)) {
                    inline.push((name.to_string(), depth));
                }
            }
            Token::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1) == Some(&Token::PathSep)
                    && !matches!(
                        tokens.get(i.wrapping_sub(1)),
                        Some(Token::PathSep | Token::Other('$'))
                    ) =>
            {
                let mut module = file_module.clone();
                module.extend(inline.iter().map(|(name, _)| name.clone()));
                let mut at = i;
                for path in parse_tree(tokens, &mut at) {
                    found.push((module.clone(), path));
                }
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Parses a path or `use` tree at `at` into every full path it names (`a::{b, c::d}` → `a::b`, `a::c::d`).
fn parse_tree(tokens: &[Token], at: &mut usize) -> Vec<ModulePath> {
    match tokens.get(*at) {
        Some(Token::Open) => {
            *at += 1;
            let mut all = Vec::new();
            while let Some(token) = tokens.get(*at) {
                match token {
                    Token::Close => {
                        *at += 1;
                        break;
                    }
                    Token::Comma => *at += 1,
                    _ => {
                        let before = *at;
                        all.extend(parse_tree(tokens, at));
                        if *at == before {
                            *at += 1;
                        }
                    }
                }
            }
            all
        }
        Some(Token::Ident(name)) => {
            *at += 1;
            if tokens.get(*at) != Some(&Token::PathSep) {
                return vec![vec![name.clone()]];
            }
            *at += 1;
            parse_tree(tokens, at)
                .into_iter()
                .map(|mut rest| {
                    rest.insert(0, name.clone());
                    rest
                })
                .collect()
        }
        Some(Token::Glob) => {
            *at += 1;
            vec![Vec::new()]
        }
        _ => vec![Vec::new()],
    }
}

/// The absolute module path `path` names from inside `module`; `None` if it climbs above the crate.
fn resolve(module: &ModulePath, path: &ModulePath) -> Option<ModulePath> {
    let mut segments = path.iter().peekable();
    let mut resolved = match segments.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segments.next();
            Vec::new()
        }
        _ => module.clone(),
    };
    while let Some(segment) = segments.peek() {
        match segment.as_str() {
            "super" => {
                resolved.pop()?;
            }
            "self" => {}
            _ => break,
        }
        segments.next();
    }
    resolved.extend(segments.filter(|s| *s != "self").cloned());
    Some(resolved)
}

#[test]
fn paths_are_read_like_the_compiler_reads_them() {
    let code = strip_comments_and_literals(
        r##"
        use crate::{model::Catalog, pipeline::{intake::{self, Input}, merge}};
        // use crate::serve::commented_out;
        let s = "crate::api::in_a_string"; let r = r#"crate::api::raw "quoted""#;
        let c = '"'; let q = '\''; let brace = '{'; fn f<'a>(x: &'a str) {}
        mod tests { use super::*; use super::super::clock::unix_micros; }
        pub(crate) fn g() { self::h(); $crate::ignored::path }
        "##,
    );
    let module: ModulePath = vec!["sources".into(), "handle".into()];
    let found: Vec<String> = paths(&tokenize(&code), &module)
        .into_iter()
        .map(|(from, path)| {
            format!(
                "{} -> {}",
                from.join("::"),
                resolve(&from, &path).unwrap().join("::")
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            "sources::handle -> model::Catalog",
            "sources::handle -> pipeline::intake",
            "sources::handle -> pipeline::intake::Input",
            "sources::handle -> pipeline::merge",
            "sources::handle::tests -> sources::handle",
            "sources::handle::tests -> sources::clock::unix_micros",
            "sources::handle -> sources::handle::h",
        ]
    );
}
