//! The metadata of a Python actor, read from its syntax tree (ruff's
//! parser); the script is never run. The `@actor` decorator in its forms:
//! bare, with keyword arguments, or with one dict literal, on a function
//! (`def` or `async def`) at the top of the module; the function's
//! docstring (cleaned as `inspect.getdoc` does) is the description.

use ruff_python_ast::{self as ast, Expr, Number, Stmt, UnaryOp};
use ruff_text_size::Ranged;

use super::metadata::{mistake, Found, Lit, Mistake};
use super::source::Lines;

/// Finds the `@actor` of `source`.
pub(crate) fn find(source: &str) -> Result<Found, Mistake> {
    let lines = Lines::new(source);
    let parsed = ruff_python_parser::parse_module(source).map_err(|e| {
        mistake(
            lines.line(e.location.start().into()),
            format!("syntax error: {}", e.error),
        )
    })?;
    let module = parsed.syntax();
    let mut found: Option<Found> = None;
    for stmt in &module.body {
        let Stmt::FunctionDef(def) = stmt else {
            continue;
        };
        for decorator in &def.decorator_list {
            let line = lines.line(decorator.range().start().into());
            let (is_actor, call) = match &decorator.expression {
                Expr::Call(call) => (is_actor(&call.func), Some(call)),
                other => (is_actor(other), None),
            };
            if !is_actor {
                continue;
            }
            if found.is_some() {
                return Err(mistake(line, "a second @actor: a script defines one actor"));
            }
            let fields = match call {
                None => Vec::new(),
                Some(call) => fields(&call.arguments, &lines, line)?,
            };
            found = Some(Found {
                fields,
                line,
                fallback_name: Some(def.name.to_string()),
                doc: docstring(&def.body).map(|d| clean_doc(&d)),
            });
        }
    }
    found.ok_or_else(|| {
        mistake(
            1,
            "no @actor-decorated function at the top level of the script",
        )
    })
}

/// `actor` or `<anything>.actor` (as in `reflow.actor`).
fn is_actor(e: &Expr) -> bool {
    match e {
        Expr::Name(n) => n.id.as_str() == "actor",
        Expr::Attribute(a) => a.attr.as_str() == "actor",
        _ => false,
    }
}

fn fields(
    args: &ast::Arguments,
    lines: &Lines,
    line: usize,
) -> Result<Vec<(String, Lit, usize)>, Mistake> {
    match (&args.args[..], args.keywords.is_empty()) {
        ([], _) => args
            .keywords
            .iter()
            .map(|k| {
                let kline = lines.line(k.range().start().into());
                let key = k.arg.as_ref().ok_or_else(|| {
                    mistake(kline, "`**` in @actor: the metadata must be written out")
                })?;
                Ok((key.to_string(), literal(&k.value, lines)?, kline))
            })
            .collect(),
        ([one], true) => match literal(one, lines)? {
            Lit::Dict(entries) => Ok(entries),
            other => Err(mistake(
                line,
                format!("@actor takes a dict or keyword arguments, not {other:?}"),
            )),
        },
        _ => Err(mistake(
            line,
            "@actor takes one dict or keyword arguments, not both or more",
        )),
    }
}

/// A literal expression's value; anything computed is refused.
fn literal(e: &Expr, lines: &Lines) -> Result<Lit, Mistake> {
    let line = lines.line(e.range().start().into());
    Ok(match e {
        Expr::StringLiteral(s) => Lit::Str(s.value.to_str().to_string()),
        Expr::BooleanLiteral(b) => Lit::Bool(b.value),
        Expr::NoneLiteral(_) => Lit::None,
        Expr::NumberLiteral(n) => number(&n.value, false, line)?,
        Expr::UnaryOp(u) if u.op == UnaryOp::USub => match &*u.operand {
            Expr::NumberLiteral(n) => number(&n.value, true, line)?,
            _ => return Err(computed(line)),
        },
        Expr::List(l) => Lit::List(items(&l.elts, lines)?),
        Expr::Tuple(t) => Lit::List(items(&t.elts, lines)?),
        Expr::Dict(d) => {
            let mut entries = Vec::new();
            for item in &d.items {
                let Some(key) = &item.key else {
                    return Err(mistake(line, "`**` in a metadata dict: write it out"));
                };
                let kline = lines.line(key.range().start().into());
                let Expr::StringLiteral(k) = key else {
                    return Err(mistake(kline, "metadata dict keys must be string literals"));
                };
                entries.push((
                    k.value.to_str().to_string(),
                    literal(&item.value, lines)?,
                    kline,
                ));
            }
            Lit::Dict(entries)
        }
        _ => return Err(computed(line)),
    })
}

fn computed(line: usize) -> Mistake {
    mistake(
        line,
        "computed metadata: @actor's arguments must be literals (strings, numbers, lists, dicts)",
    )
}

fn items(elts: &[Expr], lines: &Lines) -> Result<Vec<(Lit, usize)>, Mistake> {
    elts.iter()
        .map(|e| Ok((literal(e, lines)?, lines.line(e.range().start().into()))))
        .collect()
}

fn number(n: &Number, negative: bool, line: usize) -> Result<Lit, Mistake> {
    let sign = if negative { -1 } else { 1 };
    match n {
        Number::Int(i) => i
            .as_i64()
            .map(|i| Lit::Int(sign * i))
            .ok_or_else(|| mistake(line, "an integer too large for metadata")),
        Number::Float(f) => Ok(Lit::Float(if negative { -f } else { *f })),
        Number::Complex { .. } => Err(mistake(line, "a complex number in metadata")),
    }
}

/// The docstring of a function body, if its first statement is a string.
fn docstring(body: &[Stmt]) -> Option<String> {
    match body.first()? {
        Stmt::Expr(e) => match &*e.value {
            Expr::StringLiteral(s) => Some(s.value.to_str().to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// `inspect.cleandoc` (Python 3.11): tabs expanded, the smallest
/// indentation of the non-blank lines after the first removed from every
/// line after the first, the first line's leading whitespace removed, empty
/// lines at both ends dropped. Counts characters, never splits one.
pub(crate) fn clean_doc(doc: &str) -> String {
    let expanded: Vec<String> = doc.split('\n').map(expand_tabs).collect();
    let indent = |l: &str| l.chars().take_while(|c| c.is_whitespace()).count();
    let margin = expanded
        .iter()
        .skip(1)
        .filter(|l| !l.trim_start().is_empty())
        .map(|l| indent(l))
        .min();
    let mut lines: Vec<String> = expanded
        .iter()
        .enumerate()
        .map(|(i, l)| match (i, margin) {
            (0, _) => l.trim_start().to_string(),
            (_, Some(m)) => l.chars().skip(m).collect(),
            (_, None) => l.clone(),
        })
        .collect();
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    while lines.first().is_some_and(String::is_empty) {
        lines.remove(0);
    }
    lines.join("\n")
}

fn expand_tabs(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if c == '\t' {
            let n = 8 - out.chars().count() % 8;
            out.extend(std::iter::repeat_n(' ', n));
        } else {
            out.push(c);
        }
    }
    out
}
