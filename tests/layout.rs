//! The layout check: imports among `src/` files flow one way, and long files say why.
//!
//! Run it with `cargo test --test layout`.
//!
//! It reads every `src/**/*.rs` and builds the graph of file-level dependencies from the paths
//! the code names: `crate::…`, `super::…`, `self::…` and, in a file that declares child modules
//! (`mod x;`), paths into those children (`x::…`, such as a `mod.rs` file's re-exports). A path
//! counts as a dependency on the file that defines the module it names: `crate::ops::conv::X` is
//! `src/ops/conv.rs`, `crate::model::Rope` (an item re-exported by `src/model/mod.rs`) is
//! `src/model/mod.rs`. Comments, doc comments and string literals are not code and are
//! skipped; `super::` inside an inline `mod tests { … }` is the file itself.
//!
//! It fails
//! * naming the cycle, with the line of each step, if the files other than `src/lib.rs` and
//!   `src/bin/` import one another in a circle (conventions: "Nothing below imports anything
//!   above it"; a `mod.rs` re-exports and defines nothing its children import);
//! * for any `src/` file over [`MAX_LINES`] lines whose first 15 lines hold no line starting
//!   `//! Length:` that says why it is long.
//!
//! [`KNOWN_CYCLE_FILES`] and [`KNOWN_LONG_FILES`] list today's exceptions; they may only
//! shrink: an entry that no longer needs to be there fails the check too, so whoever fixes a
//! file also removes it from the list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file, in lines, without a `//! Length:` header line.
const MAX_LINES: usize = 700;

/// Files (relative to `src/`) allowed in an import cycle, all of whose members must be listed
/// here, each with the reason beside it. None today.
const KNOWN_CYCLE_FILES: &[&str] = &[];
/// Files (relative to `src/`) over [`MAX_LINES`] lines without a `//! Length:` line. Known
/// exceptions, to be removed as the files are split or explain themselves. None today.
const KNOWN_LONG_FILES: &[&str] = &[];

// ---------------------------------------------------------------------------------------------
// The checks

#[test]
fn src_files_import_one_another_without_cycles() {
    let files = read_src();
    let errors = cycle_errors(&files, KNOWN_CYCLE_FILES);
    assert!(errors.is_empty(), "\n{}\n", errors.join("\n\n"));
}

#[test]
fn long_src_files_say_why() {
    let files = read_src();
    let errors = length_errors(&files, KNOWN_LONG_FILES);
    assert!(errors.is_empty(), "\n{}\n", errors.join("\n"));
}

/// The checker itself: a planted cycle through a `mod.rs` re-export and a `super::` path is
/// found and named; comments, strings and a test module's `super::*` are not dependencies.
#[test]
fn the_checker_finds_a_planted_cycle_and_ignores_comments() {
    let file = |p: &str, s: &str| (PathBuf::from(p), s.to_string());
    let files = vec![
        file("lib.rs", "pub mod a;\npub mod b;\n"),
        file("a/mod.rs", "//! See crate::b::B.\npub mod x;\npub use x::X;\n"),
        file("a/x.rs", "use super::helper;\n/// [`crate::b`]\nfn f() { let _ = \"crate::b::B\"; }\n#[cfg(test)]\nmod tests { use super::*; }\n"),
        file("b.rs", "use crate::a::X;\npub struct B;\n"),
    ];
    let graph = dependency_graph(&files);
    assert_eq!(graph.get(Path::new("a/x.rs")).map(|e| e.keys().cloned().collect::<Vec<_>>()), Some(vec![PathBuf::from("a/mod.rs")]));
    assert_eq!(graph.get(Path::new("b.rs")).map(|e| e.keys().cloned().collect::<Vec<_>>()), Some(vec![PathBuf::from("a/mod.rs")]));
    let errors = cycle_errors(&files, &[]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("src/a/mod.rs:3") && errors[0].contains("src/a/x.rs:1"), "{}", errors[0]);
    assert!(!errors[0].contains("b.rs"), "b.rs is not in the cycle: {}", errors[0]);
    // Allowed when every file of the cycle is listed; a listed file outside any cycle is stale.
    assert!(cycle_errors(&files, &["a/mod.rs", "a/x.rs"]).is_empty());
    let stale = cycle_errors(&files, &["a/mod.rs", "a/x.rs", "b.rs"]);
    assert!(stale.len() == 1 && stale[0].contains("b.rs"), "{stale:?}");
}

#[test]
fn the_checker_flags_long_files_without_a_reason() {
    let body = "fn f() {}\n".repeat(MAX_LINES + 1);
    let files = vec![
        (PathBuf::from("long.rs"), body.clone()),
        (PathBuf::from("explained.rs"), format!("//! A thing.\n//! Length: one table of constants.\n{body}")),
        (PathBuf::from("short.rs"), "fn f() {}\n".to_string()),
    ];
    assert_eq!(length_errors(&files, &[]).len(), 1);
    assert!(length_errors(&files, &["long.rs"]).is_empty());
    assert_eq!(length_errors(&files, &["long.rs", "short.rs"]).len(), 1, "a stale entry is an error");
}

// ---------------------------------------------------------------------------------------------
// Reading src/

/// Every `.rs` file under `src/`, as (path relative to `src/`, contents), sorted.
fn read_src() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((path.strip_prefix(&root).expect("under src/").to_path_buf(), text));
            }
        }
    }
    out.sort();
    out
}

fn shown(p: &Path) -> String {
    format!("src/{}", p.display())
}

// ---------------------------------------------------------------------------------------------
// Length

fn length_errors(files: &[(PathBuf, String)], known: &[&str]) -> Vec<String> {
    let mut errors = Vec::new();
    for (path, text) in files {
        let lines = text.lines().count();
        let explained = text.lines().take(15).any(|l| l.starts_with("//! Length:"));
        let listed = known.iter().any(|k| Path::new(k) == path);
        let too_long = lines > MAX_LINES && !explained;
        if too_long && !listed {
            errors.push(format!("{} has {lines} lines (over {MAX_LINES}) and no `//! Length:` line in its first 15 saying why: split it, or say why", shown(path)));
        } else if listed && !too_long {
            errors.push(format!("{} is in KNOWN_LONG_FILES but no longer needs to be ({lines} lines): remove it from the list", shown(path)));
        }
    }
    for k in known {
        if !files.iter().any(|(p, _)| p == Path::new(k)) {
            errors.push(format!("KNOWN_LONG_FILES names src/{k}, which does not exist: remove it from the list"));
        }
    }
    errors
}

// ---------------------------------------------------------------------------------------------
// Cycles

/// Whether a file takes part in the graph (`lib.rs` and the binaries are the top).
fn in_graph(p: &Path) -> bool {
    p != Path::new("lib.rs") && !p.starts_with("bin")
}

fn cycle_errors(files: &[(PathBuf, String)], known: &[&str]) -> Vec<String> {
    let graph = dependency_graph(files);
    let mut errors = Vec::new();
    let mut tolerated: BTreeSet<PathBuf> = BTreeSet::new();
    for scc in strongly_connected(&graph) {
        if scc.len() < 2 {
            continue;
        }
        let listed = scc.iter().all(|f| known.iter().any(|k| Path::new(k) == f.as_path()));
        if listed {
            tolerated.extend(scc.iter().cloned());
            continue;
        }
        let members: Vec<String> = scc.iter().map(|p| shown(p)).collect();
        let cycle = one_cycle(&graph, &scc);
        let mut msg = format!("import cycle among {}:\n", members.join(", "));
        for pair in cycle.windows(2) {
            let (line, what) = &graph[&pair[0]][&pair[1]];
            msg.push_str(&format!("  {}:{line} uses `{what}` ({})\n", shown(&pair[0]), shown(&pair[1])));
        }
        msg.push_str("move the shared piece below both files (or pass it in as an argument)");
        errors.push(msg);
    }
    for k in known {
        if !tolerated.contains(Path::new(k)) {
            errors.push(format!("src/{k} is in KNOWN_CYCLE_FILES but is in no import cycle: remove it from the list"));
        }
    }
    errors
}

/// For each file in the graph: the files it depends on, each with the first line that does and
/// the path written there.
type Graph = BTreeMap<PathBuf, BTreeMap<PathBuf, (usize, String)>>;

fn dependency_graph(files: &[(PathBuf, String)]) -> Graph {
    // Module path → file: `a/b.rs` and `a/b/mod.rs` are `[a, b]`, `lib.rs` is `[]`.
    let mut modules: BTreeMap<Vec<String>, PathBuf> = BTreeMap::new();
    for (path, _) in files {
        modules.insert(module_path(path), path.clone());
    }
    let mut graph = Graph::new();
    for (path, text) in files {
        if !in_graph(path) {
            continue;
        }
        let edges = graph.entry(path.clone()).or_default();
        for (line, written, target) in file_paths(path, text) {
            // The longest prefix of the path that is a file's module.
            let file = (0..=target.len()).rev().find_map(|n| modules.get(&target[..n]));
            if let Some(file) = file {
                if file != path && in_graph(file) {
                    edges.entry(file.clone()).or_insert((line, written));
                }
            }
        }
    }
    graph
}

fn module_path(path: &Path) -> Vec<String> {
    let mut parts: Vec<String> = path.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file name");
    if last != "mod.rs" && last != "lib.rs" {
        parts.push(last.trim_end_matches(".rs").to_string());
    }
    parts
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &Graph) -> Vec<Vec<PathBuf>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a PathBuf, usize>,
        low: BTreeMap<&'a PathBuf, usize>,
        stack: Vec<&'a PathBuf>,
        on_stack: BTreeSet<&'a PathBuf>,
        out: Vec<Vec<PathBuf>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a PathBuf) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph[v].keys() {
            if !graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = s.stack.pop().expect("on the stack");
                s.on_stack.remove(w);
                scc.push(w.clone());
                if w == v {
                    break;
                }
            }
            scc.sort();
            s.out.push(scc);
        }
    }
    let mut s = State { graph, index: BTreeMap::new(), low: BTreeMap::new(), stack: Vec::new(), on_stack: BTreeSet::new(), out: Vec::new() };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// A shortest cycle through the first file of a strongly connected component, as the list of
/// files from it back to it.
fn one_cycle(graph: &Graph, scc: &[PathBuf]) -> Vec<PathBuf> {
    let members: BTreeSet<&PathBuf> = scc.iter().collect();
    let start = &scc[0];
    let mut prev: BTreeMap<&PathBuf, &PathBuf> = BTreeMap::new();
    let mut seen = BTreeSet::from([start]);
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().filter(|w| members.contains(w)) {
            if w == start {
                let mut path = vec![v.clone()];
                let mut at = v;
                while at != start {
                    at = prev[at];
                    path.push(at.clone());
                }
                path.reverse(); // start … v
                path.push(start.clone());
                return path;
            }
            if seen.insert(w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected component of two or more files has a cycle")
}

// ---------------------------------------------------------------------------------------------
// Reading paths out of a file

/// Every module path the file names: (line, the path as written, the absolute module path it
/// points into).
fn file_paths(path: &Path, text: &str) -> Vec<(usize, String, Vec<String>)> {
    let code = strip_comments_and_strings(text);
    let tokens = tokenize(&code);
    let here = module_path(path);
    // Child modules declared in this file (`mod x;`, outside any inline module).
    let mut children: BTreeSet<String> = BTreeSet::new();
    {
        let mut depth = 0usize;
        for (i, t) in tokens.iter().enumerate() {
            match t.kind {
                Tok::Open => depth += 1,
                Tok::Close => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth == 0 && t.is_ident("mod") {
                if let (Some(name), Some(end)) = (tokens.get(i + 1), tokens.get(i + 2)) {
                    if matches!(end.kind, Tok::Semi) {
                        children.insert(name.text.clone());
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    // The inline modules (`mod tests { … }`) we are in, with the brace depth each opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        match t.kind {
            Tok::Open => {
                depth += 1;
                i += 1;
                continue;
            }
            Tok::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth + 1) {
                    inline.pop();
                }
                i += 1;
                continue;
            }
            _ => {}
        }
        if t.is_ident("mod") {
            if let (Some(name), Some(open)) = (tokens.get(i + 1), tokens.get(i + 2)) {
                if matches!(open.kind, Tok::Open) {
                    inline.push((name.text.clone(), depth + 1));
                }
            }
        }
        let starts_path = matches!(t.kind, Tok::Ident) && !matches!(tokens.get(i.wrapping_sub(1)).map(|p| &p.kind), Some(Tok::Sep) | Some(Tok::Dollar)) && matches!(tokens.get(i + 1).map(|n| &n.kind), Some(Tok::Sep));
        if !starts_path {
            i += 1;
            continue;
        }
        let (trees, next) = parse_tree(&tokens, i);
        let mut current = here.clone();
        current.extend(inline.iter().map(|(n, _)| n.clone()));
        for segs in trees {
            let first = segs[0].as_str();
            let target = match first {
                "crate" => Some(segs[1..].to_vec()),
                "self" => Some([current.clone(), segs[1..].to_vec()].concat()),
                "super" => {
                    let ups = segs.iter().take_while(|s| *s == "super").count();
                    let base = current[..current.len().saturating_sub(ups)].to_vec();
                    Some([base, segs[ups..].to_vec()].concat())
                }
                _ if inline.is_empty() && children.contains(first) => Some([here.clone(), segs.clone()].concat()),
                _ => None,
            };
            if let Some(target) = target {
                out.push((t.line, segs.join("::"), target));
            }
        }
        i = next;
    }
    out
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident,
    /// `::`
    Sep,
    /// `{`
    Open,
    /// `}`
    Close,
    Comma,
    Semi,
    Star,
    Dollar,
    Other,
}

#[derive(Debug)]
struct Token {
    kind: Tok,
    text: String,
    line: usize,
}

impl Token {
    fn is_ident(&self, s: &str) -> bool {
        self.kind == Tok::Ident && self.text == s
    }
}

fn tokenize(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let tok = |kind, text: &str| Token { kind, text: text.to_string(), line };
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            // `r#ident` raw identifiers.
            let text = text.strip_prefix("r#").map(str::to_string).unwrap_or(text);
            out.push(tok(Tok::Ident, &text));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(tok(Tok::Sep, "::"));
            i += 2;
        } else {
            let kind = match c {
                '{' => Tok::Open,
                '}' => Tok::Close,
                ',' => Tok::Comma,
                ';' => Tok::Semi,
                '*' => Tok::Star,
                '$' => Tok::Dollar,
                _ => Tok::Other,
            };
            out.push(tok(kind, &c.to_string()));
            i += 1;
        }
    }
    out
}

/// The path starting at token `i` (`a::b::{c, d::e}`), expanded into one list of segments per
/// leaf (`self` in braces is the prefix itself); and the index after it. Segments end at
/// anything that is not `ident ::` (a turbofish, `as`, `*`, a call).
fn parse_tree(tokens: &[Token], i: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix = Vec::new();
    let mut i = i;
    loop {
        match tokens.get(i) {
            Some(t) if t.kind == Tok::Ident => {
                prefix.push(t.text.clone());
                i += 1;
            }
            _ => break,
        }
        if tokens.get(i).map(|t| &t.kind) != Some(&Tok::Sep) {
            return (vec![prefix], i);
        }
        i += 1; // ::
        match tokens.get(i).map(|t| &t.kind) {
            Some(Tok::Open) => {
                i += 1;
                let mut leaves = Vec::new();
                loop {
                    match tokens.get(i).map(|t| &t.kind) {
                        Some(Tok::Close) => {
                            i += 1;
                            break;
                        }
                        Some(Tok::Comma) => i += 1,
                        Some(Tok::Ident) if tokens[i].text == "self" && tokens.get(i + 1).map(|t| &t.kind) != Some(&Tok::Sep) => {
                            leaves.push(prefix.clone());
                            i += 1;
                        }
                        Some(Tok::Ident) => {
                            let (sub, next) = parse_tree(tokens, i);
                            leaves.extend(sub.into_iter().map(|s| [prefix.clone(), s].concat()));
                            // `as name` after a leaf.
                            i = next;
                            if tokens.get(i).is_some_and(|t| t.is_ident("as")) {
                                i += 2;
                            }
                        }
                        Some(_) => i += 1, // `*`
                        None => break,
                    }
                }
                return (leaves, i);
            }
            Some(Tok::Ident) => continue,
            _ => return (vec![prefix], i), // `::*`, `::<T>`
        }
    }
    (vec![prefix], i)
}

/// `text` with comments (doc comments included) and the insides of string and character
/// literals replaced by spaces; line breaks are kept, so line numbers stay right.
fn strip_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut k = j;
            while c.get(k) == Some(&'#') {
                k += 1;
            }
            c.get(k) == Some(&'"')
        } {
            // Raw string: r#"…"#.
            let j = i + if c[i] == 'b' { 2 } else { 1 };
            let mut k = j;
            while c.get(k) == Some(&'#') {
                k += 1;
            }
            let hashes = k - j;
            out.push('"');
            i = k + 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, c[i]);
                i += 1;
            }
            out.push('"');
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(&mut out, c[i]);
                    i += 1;
                }
                if i < c.len() {
                    blank(&mut out, c[i]);
                    i += 1;
                }
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' && !prev_ident {
            // A character literal ('x', '\n', '\u{..}'), or a lifetime / label ('a), kept.
            if c.get(i + 1) == Some(&'\\') {
                let mut k = i + 2;
                while k < c.len() && c[k] != '\'' {
                    k += 1;
                }
                out.push_str("' '");
                i = k + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                out.push_str("' '");
                i += 3;
            } else {
                out.push('\'');
                i += 1;
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}
