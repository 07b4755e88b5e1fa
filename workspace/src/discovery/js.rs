//! The metadata of a JavaScript actor, read from its syntax tree (oxc's
//! parser); the script is never run. Forms, at the top level of the
//! script: `const metadata = {...}` (also `let`/`var`),
//! `module.exports.metadata = {...}`, `exports.metadata = {...}`,
//! `module.exports = { metadata: {...}, process }` (or `{ metadata, ... }`
//! naming a top-level `const metadata`), and `__actor_metadata__` in place
//! of `metadata` in any of them. ES modules: `export const metadata =
//! {...}`, `export { metadata }` (or `export { m as metadata }`) naming a
//! top-level const, and `export default { metadata: {...}, process }`.
//! The object must be a literal.
//!
//! A `.mjs` file is an ES module and a `.cjs` file a CommonJS script, as
//! Node has them; any other is a module when it has `import` or `export`
//! statements (as the JavaScript worker decides too).

use oxc_allocator::Allocator;
use oxc_ast::ast::{
    ArrayExpressionElement, AssignmentTarget, BindingPattern, Declaration, Expression,
    ObjectExpression, ObjectPropertyKind, PropertyKey, Statement, VariableDeclaration,
};
use oxc_span::{GetSpan, SourceType};

use super::metadata::{mistake, Found, Lit, Mistake};
use super::source::Lines;

const NAMES: [&str; 2] = ["metadata", "__actor_metadata__"];

/// How a script is parsed, from its file name.
fn source_type(file: &str) -> SourceType {
    if file.ends_with(".mjs") {
        SourceType::mjs()
    } else if file.ends_with(".cjs") {
        SourceType::cjs()
    } else {
        SourceType::unambiguous()
    }
}

/// Finds the metadata object of `source`, the script file `file`.
pub(crate) fn find(source: &str, file: &str) -> Result<Found, Mistake> {
    let lines = Lines::new(source);
    let allocator = Allocator::default();
    let parsed = oxc_parser::Parser::new(&allocator, source, source_type(file)).parse();
    if let Some(e) = parsed.diagnostics.errors().next() {
        let offset = e.labels.first().map_or(0, |l| l.offset());
        return Err(mistake(
            lines.line(offset),
            format!("syntax error: {}", e.message),
        ));
    }
    if parsed.panicked {
        return Err(mistake(1, "syntax error: the parser gave up"));
    }
    // Top-level `const name = <expr>`, for `{ metadata }` shorthands.
    let mut consts: Vec<(&str, &Expression)> = Vec::new();
    let mut candidates: Vec<(&Expression, usize)> = Vec::new();
    // Declared names, for `export { metadata }` after the fact.
    let mut exported: Vec<(&str, usize)> = Vec::new();
    for stmt in &parsed.program.body {
        match stmt {
            Statement::VariableDeclaration(decl) => {
                declare(decl, &lines, &mut consts, &mut candidates);
            }
            Statement::ExportDeclaration(e) => {
                if let Declaration::VariableDeclaration(decl) = &e.declaration {
                    declare(decl, &lines, &mut consts, &mut candidates);
                }
            }
            Statement::ExportNamedDeclaration(e) => {
                for spec in &e.specifiers {
                    if NAMES.contains(&spec.exported.name().as_str()) {
                        exported.push((spec.local.name().as_str(), lines.line(spec.span.start)));
                    }
                }
            }
            Statement::ExportDefaultDeclaration(e) => {
                if let Some(Expression::ObjectExpression(o)) = e.declaration.as_expression() {
                    object_candidates(o, &lines, &mut candidates);
                }
            }
            Statement::ExpressionStatement(e) => {
                let Expression::AssignmentExpression(a) = &e.expression else {
                    continue;
                };
                let line = lines.line(a.span.start);
                match target_path(&a.left).as_deref() {
                    Some(["module", "exports", name] | ["exports", name] | [name])
                        if NAMES.contains(name) =>
                    {
                        candidates.push((&a.right, line));
                    }
                    Some(["module", "exports"]) => {
                        if let Expression::ObjectExpression(o) = &a.right {
                            object_candidates(o, &lines, &mut candidates);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    for (local, line) in exported {
        let init = consts
            .iter()
            .find(|(n, _)| *n == local)
            .map(|(_, e)| *e)
            .ok_or_else(|| {
                mistake(
                    line,
                    format!("`export {{ {local} }}` names no top-level const"),
                )
            })?;
        candidates.push((init, line));
    }
    let mut objects: Vec<(&Expression, usize)> = Vec::new();
    for (expr, line) in candidates {
        let resolved = match expr {
            Expression::Identifier(id) => consts
                .iter()
                .find(|(n, _)| *n == id.name.as_str())
                .map(|(_, e)| *e)
                .ok_or_else(|| {
                    mistake(
                        line,
                        format!(
                            "metadata names `{}`, which is not a top-level const",
                            id.name
                        ),
                    )
                })?,
            other => other,
        };
        if !objects.iter().any(|(e, _)| std::ptr::eq(*e, resolved)) {
            objects.push((resolved, line));
        }
    }
    let (expr, line) =
        match objects.as_slice() {
            [] => return Err(mistake(
                1,
                "no `metadata` object (`const metadata = {...}`, `export const metadata = {...}` \
             or `module.exports.metadata = {...}`)",
            )),
            [one] => *one,
            [_, (_, second), ..] => {
                return Err(mistake(
                    *second,
                    "a second metadata object: a script defines one actor",
                ))
            }
        };
    match literal(expr, &lines)? {
        Lit::Dict(fields) => Ok(Found {
            fields,
            line,
            fallback_name: None,
            doc: None,
        }),
        _ => Err(mistake(line, "metadata must be an object literal")),
    }
}

/// The top-level `const name = <expr>`s of `decl`: kept for shorthands,
/// and a candidate when the name is a metadata name.
fn declare<'a, 'b>(
    decl: &'b VariableDeclaration<'a>,
    lines: &Lines,
    consts: &mut Vec<(&'b str, &'b Expression<'a>)>,
    candidates: &mut Vec<(&'b Expression<'a>, usize)>,
) {
    for d in &decl.declarations {
        let (BindingPattern::BindingIdentifier(id), Some(init)) = (&d.id, &d.init) else {
            continue;
        };
        consts.push((id.name.as_str(), init));
        if NAMES.contains(&id.name.as_str()) {
            candidates.push((init, lines.line(d.span.start)));
        }
    }
}

/// The `metadata` properties of an exported object (`module.exports = {
/// metadata, ... }`, `export default { metadata: {...}, ... }`).
fn object_candidates<'a, 'b>(
    o: &'b ObjectExpression<'a>,
    lines: &Lines,
    candidates: &mut Vec<(&'b Expression<'a>, usize)>,
) {
    for p in &o.properties {
        let ObjectPropertyKind::ObjectProperty(p) = p else {
            continue;
        };
        if key_name(&p.key).is_some_and(|k| NAMES.contains(&k)) {
            candidates.push((&p.value, lines.line(p.span.start)));
        }
    }
}

/// `a.b.c = ...` as ["a", "b", "c"].
fn target_path<'a>(t: &'a AssignmentTarget<'a>) -> Option<Vec<&'a str>> {
    match t {
        AssignmentTarget::AssignmentTargetIdentifier(id) => Some(vec![id.name.as_str()]),
        AssignmentTarget::StaticMemberExpression(m) => {
            let mut path = expr_path(&m.object)?;
            path.push(m.property.name.as_str());
            Some(path)
        }
        _ => None,
    }
}

fn expr_path<'a>(e: &'a Expression<'a>) -> Option<Vec<&'a str>> {
    match e {
        Expression::Identifier(id) => Some(vec![id.name.as_str()]),
        Expression::StaticMemberExpression(m) => {
            let mut path = expr_path(&m.object)?;
            path.push(m.property.name.as_str());
            Some(path)
        }
        _ => None,
    }
}

fn key_name<'a>(k: &'a PropertyKey<'a>) -> Option<&'a str> {
    match k {
        PropertyKey::StaticIdentifier(id) => Some(id.name.as_str()),
        PropertyKey::StringLiteral(s) => Some(s.value.as_str()),
        _ => None,
    }
}

fn computed(line: usize) -> Mistake {
    mistake(
        line,
        "computed metadata: it must be a literal (strings, numbers, arrays, objects)",
    )
}

fn literal(e: &Expression, lines: &Lines) -> Result<Lit, Mistake> {
    let line = lines.line(e.span().start);
    Ok(match e {
        Expression::StringLiteral(s) => Lit::Str(s.value.as_str().to_string()),
        Expression::TemplateLiteral(t) if t.expressions.is_empty() => Lit::Str(
            t.quasis
                .iter()
                .map(|q| q.value.cooked.as_ref().map_or("", |c| c.as_str()))
                .collect(),
        ),
        Expression::BooleanLiteral(b) => Lit::Bool(b.value),
        Expression::NullLiteral(_) => Lit::None,
        Expression::NumericLiteral(n) => number(n.value),
        Expression::UnaryExpression(u)
            if u.operator == oxc_ast::ast::UnaryOperator::UnaryNegation =>
        {
            match &u.argument {
                Expression::NumericLiteral(n) => number(-n.value),
                _ => return Err(computed(line)),
            }
        }
        Expression::ParenthesizedExpression(p) => literal(&p.expression, lines)?,
        Expression::ArrayExpression(a) => {
            let mut items = Vec::new();
            for el in &a.elements {
                let line = lines.line(el.span().start);
                match el {
                    ArrayExpressionElement::SpreadElement(_)
                    | ArrayExpressionElement::Elision(_) => return Err(computed(line)),
                    other => items.push((literal(other.to_expression(), lines)?, line)),
                }
            }
            Lit::List(items)
        }
        Expression::ObjectExpression(o) => {
            let mut entries = Vec::new();
            for p in &o.properties {
                let line = lines.line(p.span().start);
                let ObjectPropertyKind::ObjectProperty(p) = p else {
                    return Err(computed(line));
                };
                if p.computed || p.method || p.shorthand {
                    return Err(computed(line));
                }
                let key = key_name(&p.key).ok_or_else(|| computed(line))?;
                entries.push((key.to_string(), literal(&p.value, lines)?, line));
            }
            Lit::Dict(entries)
        }
        _ => return Err(computed(line)),
    })
}

/// JavaScript numbers: integral ones as integers.
fn number(v: f64) -> Lit {
    if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        Lit::Int(v as i64)
    } else {
        Lit::Float(v)
    }
}
