//! Hook source → [`Compiled`]: TypeScript stripped to JavaScript, checked, hashed.
//!
//! Runs at load only (startup, reload, deploy), never on the request path. Three checks, in
//! order, each failing with a [`CompileError`] that points into the TypeScript source:
//!
//! 1. oxc 0.146 parses the TypeScript (plus semantic syntax checks), strips the types and
//!    prints JavaScript with a source map (syntax errors carry the TS line and column).
//! 2. QuickJS compiles that JavaScript as a module in a throwaway runtime and writes its
//!    bytecode (engine-level errors are mapped back to TS positions through the source map).
//! 3. The module is evaluated once in a throwaway, hardened context under a deadline and a
//!    memory limit, and must have a `default` export that is a function.
//!
//! # Why the bytecode is not what the workers load
//!
//! Loading bytecode (`Module::load`) is `unsafe` in rquickjs, since malformed bytecode is
//! undefined behaviour, and this crate forbids `unsafe_code` (no exceptions). The only
//! safe route to it is rquickjs's `Bundle` loader, which needs `&'static` bytes (leaking
//! every deployed version) and merely hides the same unchecked load behind a safe
//! signature. So workers declare the module from [`Compiled::js`] in each new context
//! instead; that context keeps the engine's eval capability (module declaration needs it)
//! while hook code gets none (see `sandbox.rs`). Measured cost: 10 µs more per context for
//! a trivial hook, 335 µs more for a 102-line one, next to a 4 ms context build (see the
//! pool docs); Pooled contexts are built once per worker and version. The
//! bytecode is still produced, as proof that QuickJS accepts the module and as a
//! ready artifact should a safe loader appear; nothing reads it back.
//!
//! This module must not keep any runtime or context alive after `compile` returns, and must
//! not give the module top level anything but frozen built-ins (no `sdk`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use oxc_allocator::Allocator;
use oxc_codegen::{Codegen, CodegenOptions};
use oxc_diagnostics::OxcDiagnostic;
use oxc_parser::Parser;
use oxc_semantic::SemanticBuilder;
use oxc_span::SourceType;
use oxc_transformer::{TransformOptions, Transformer};
use rquickjs::module::WriteOptions;
use rquickjs::{CatchResultExt, CaughtError, Context, Module, Runtime};
use sha2::{Digest, Sha256};

use super::sandbox;

/// How long a module's top level may run when it is checked here.
const CHECK_DEADLINE: std::time::Duration = sandbox::LOAD_DEADLINE;

/// Memory of the throwaway runtime that checks a module.
const CHECK_MEMORY_BYTES: usize = 64 << 20;

/// A hook ready to be loaded into worker contexts. Immutable; shared as `Arc`.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The hook's name, as configured (the file stem).
    pub name: Arc<str>,
    /// First 12 hex digits of the SHA-256 of the TypeScript source.
    pub version: Arc<str>,
    /// The TypeScript source.
    pub source: Arc<str>,
    /// The stripped JavaScript, which the workers declare in each context.
    pub js: Arc<str>,
    /// QuickJS module bytecode of [`Compiled::js`] (source stripped). Produced by us only;
    /// not loaded by the workers (see the module docs).
    pub bytecode: Arc<[u8]>,
    /// Per JavaScript line (0-based): the TypeScript line (1-based) it came from, 0 when
    /// unknown. Maps positions in runtime error stacks back to the source.
    lines: Arc<[u32]>,
}

/// Why a hook did not compile, located in its TypeScript source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct CompileError {
    /// The hook file.
    pub file: PathBuf,
    /// Line in the TypeScript source, from 1.
    pub line: usize,
    /// Column in the TypeScript source, from 1 (characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// JavaScript from the TypeScript stripper, with positions back into the TypeScript.
struct Stripped {
    js: String,
    /// (JS line, JS column, TS line, TS column), all 0-based, in JS order.
    tokens: Vec<(u32, u32, u32, u32)>,
}

/// Compiles the hook `name` whose TypeScript `source` was read from `file`.
///
/// `file` is used in messages only. Blocking: takes about 4–8 ms on the development VM,
/// most of it hardening the throwaway context that runs the module's top level (which may
/// run up to half a second before it is interrupted); call it off the async workers
/// (`spawn_blocking`) when reloading under load.
pub fn compile(name: &str, file: &Path, source: &str) -> Result<Compiled, CompileError> {
    let version = version_of(source);
    let stripped = strip(file, source)?;
    let lines = line_map(&stripped);
    let bytecode = check(name, file, source, &stripped)?;
    Ok(Compiled {
        name: Arc::from(name),
        version: Arc::from(version),
        source: Arc::from(source),
        js: Arc::from(stripped.js),
        bytecode: Arc::from(bytecode),
        lines: Arc::from(lines),
    })
}

/// First 12 hex digits of the SHA-256 of `source`.
fn version_of(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    let mut hex = hex::encode(digest);
    hex.truncate(12);
    hex
}

/// TypeScript → JavaScript with oxc: parse, semantic checks, strip types, print.
fn strip(file: &Path, source: &str) -> Result<Stripped, CompileError> {
    let alloc = Allocator::default();
    let parsed = Parser::new(&alloc, source, SourceType::ts().with_module(true)).parse();
    if let Some(diag) = parsed.diagnostics.errors().next() {
        return Err(at_offset(file, source, first_offset(diag), &diag.message));
    }
    let mut program = parsed.program;
    let semantic = SemanticBuilder::new()
        .with_check_syntax_error(true)
        .build(&program);
    if let Some(diag) = semantic.diagnostics.errors().next() {
        return Err(at_offset(file, source, first_offset(diag), &diag.message));
    }
    let scoping = semantic.semantic.into_scoping();
    let transformed = Transformer::new(&alloc, file, &TransformOptions::default())
        .build_with_scoping(scoping, &mut program);
    if let Some(diag) = transformed.diagnostics.errors().next() {
        return Err(at_offset(file, source, first_offset(diag), &diag.message));
    }
    let options = CodegenOptions {
        source_map_path: Some(file.to_path_buf()),
        ..CodegenOptions::default()
    };
    let printed = Codegen::new().with_options(options).build(&program);
    let tokens = printed
        .map
        .map(|map| {
            map.get_tokens()
                .map(|t| {
                    (
                        t.get_dst_line(),
                        t.get_dst_col(),
                        t.get_src_line(),
                        t.get_src_col(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Stripped {
        js: printed.code,
        tokens,
    })
}

/// Compiles the JavaScript with QuickJS, writes its bytecode, and runs its top level once in
/// a hardened context to check the default export.
fn check(
    name: &str,
    file: &Path,
    source: &str,
    stripped: &Stripped,
) -> Result<Vec<u8>, CompileError> {
    let internal = |message: String| CompileError {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message,
    };
    let runtime =
        Runtime::new().map_err(|e| internal(format!("cannot start the JavaScript engine: {e}")))?;
    runtime.set_memory_limit(CHECK_MEMORY_BYTES);
    runtime.set_max_stack_size(super::DEFAULT_STACK_BYTES);
    let started = Instant::now();
    runtime.set_interrupt_handler(Some(Box::new(move || started.elapsed() > CHECK_DEADLINE)));
    let context = Context::full(&runtime)
        .map_err(|e| internal(format!("cannot start the JavaScript engine: {e}")))?;
    let located = |caught: &CaughtError<'_>, what: &str| {
        let (message, position) = sandbox::describe_caught(caught, name);
        let (line, column) = position
            .and_then(|(l, c)| to_source(stripped, l, c))
            .map_or((1, 1), |(l, c)| (l, column_in_chars(source, l, c)));
        CompileError {
            file: file.to_path_buf(),
            line,
            column,
            message: format!("{what}{message}"),
        }
    };
    context.with(|ctx| {
        sandbox::harden(&ctx)
            .catch(&ctx)
            .map_err(|e| internal(format!("cannot harden the context: {e}")))?;
        let declared = Module::declare(ctx.clone(), name, stripped.js.as_bytes())
            .catch(&ctx)
            .map_err(|e| located(&e, ""))?;
        let bytecode = declared
            .write(WriteOptions {
                strip_source: true,
                ..WriteOptions::default()
            })
            .catch(&ctx)
            .map_err(|e| internal(format!("cannot write bytecode: {e}")))?;
        let (module, promise) = declared
            .eval()
            .catch(&ctx)
            .map_err(|e| located(&e, "module top level failed: "))?;
        promise
            .finish::<()>()
            .catch(&ctx)
            .map_err(|e| located(&e, "module top level failed: "))?;
        let export: rquickjs::Value<'_> = module
            .get("default")
            .catch(&ctx)
            .map_err(|e| located(&e, ""))?;
        if export.is_function() {
            Ok(bytecode)
        } else {
            Err(CompileError {
                file: file.to_path_buf(),
                line: 1,
                column: 1,
                message: "hook must `export default` a function".to_owned(),
            })
        }
    })
}

/// For each JS line, the TS line (1-based) of its first mapped token; 0 when none.
fn line_map(stripped: &Stripped) -> Vec<u32> {
    let js_lines = stripped.js.lines().count();
    let mut map = vec![0u32; js_lines + 1];
    for &(js_line, _, ts_line, _) in &stripped.tokens {
        if let Some(slot) = map.get_mut(js_line as usize)
            && *slot == 0
        {
            *slot = ts_line.saturating_add(1);
        }
    }
    map
}

/// The TS position (1-based line, 0-based UTF-16 column) of a JS position (1-based, as
/// QuickJS reports it): the last mapped token at or before it.
fn to_source(stripped: &Stripped, js_line: usize, js_column: usize) -> Option<(usize, usize)> {
    let line = u32::try_from(js_line.checked_sub(1)?).ok()?;
    let column = u32::try_from(js_column.saturating_sub(1)).ok()?;
    let found = stripped
        .tokens
        .iter()
        .take_while(|&&(l, c, _, _)| (l, c) <= (line, column))
        .last()
        .or_else(|| stripped.tokens.iter().find(|&&(l, _, _, _)| l == line))?;
    Some((found.2 as usize + 1, found.3 as usize))
}

/// 1-based column in characters of a 0-based UTF-16 column on 1-based `line`.
fn column_in_chars(source: &str, line: usize, utf16_column: usize) -> usize {
    let Some(text) = source.lines().nth(line.saturating_sub(1)) else {
        return utf16_column + 1;
    };
    let mut units = 0;
    for (chars, ch) in text.chars().enumerate() {
        if units >= utf16_column {
            return chars + 1;
        }
        units += ch.len_utf16();
    }
    text.chars().count() + 1
}

/// Byte offset of a diagnostic's first label, or 0.
fn first_offset(diag: &OxcDiagnostic) -> usize {
    diag.labels
        .first()
        .map_or(0, |label| label.offset() as usize)
}

/// A compile error at a byte offset of `source`.
fn at_offset(file: &Path, source: &str, offset: usize, message: &str) -> CompileError {
    let before = source.get(..offset.min(source.len())).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    CompileError {
        file: file.to_path_buf(),
        line,
        column,
        message: lowercase_first(message),
    }
}

/// oxc messages start with a capital; ours do not.
fn lowercase_first(message: &str) -> String {
    let mut chars = message.trim_end_matches('.').chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

// === impl Compiled ===

impl Compiled {
    /// The TypeScript line (1-based) that JavaScript line `js_line` (1-based) came from.
    pub(crate) fn source_line(&self, js_line: usize) -> Option<usize> {
        let line = *self.lines.get(js_line.checked_sub(1)?)?;
        (line > 0).then_some(line as usize)
    }
}
