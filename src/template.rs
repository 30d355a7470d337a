//! The templates of `openvpn/*.tmpl` and `cloud-init/user-data.yaml.tmpl`,
//! rendered with minijinja: `{{ name }}` is replaced by a value, and
//! `{% if flag %}` … `{% endif %}` keeps a section only when the flag is set
//! (a block tag alone on its line leaves no line behind). Undefined names
//! are errors, nothing is escaped, and the values are data: a value holding
//! `{{` is written as it is, never rendered again.

use std::collections::BTreeMap;

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

/// A template that does not parse, or names a value it is not given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(String);

/// Render `text` with the values `vars` and the booleans `flags` (every
/// flag the template tests must be given, set or not).
pub fn render(
    text: &str,
    vars: &[(&str, String)],
    flags: &[(&str, bool)],
) -> Result<String, TemplateError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    let mut ctx: BTreeMap<&str, Value> = BTreeMap::new();
    for (k, v) in vars {
        ctx.insert(k, Value::from(v.as_str()));
    }
    for (k, on) in flags {
        ctx.insert(k, Value::from(*on));
    }
    let template = env
        .template_from_str(text)
        .map_err(|e| TemplateError(describe(&e)))?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|name| !ctx.contains_key(name.as_str()))
        .map(|name| format!("{{{{{name}}}}}"))
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(TemplateError(format!(
            "unknown placeholder {}",
            unknown.join(", ")
        )));
    }
    template
        .render(ctx)
        .map_err(|e| TemplateError(describe(&e)))
}

/// minijinja's reason, with its line.
fn describe(e: &minijinja::Error) -> String {
    let reason = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(line) => format!("line {line}: {reason}"),
        None => reason,
    }
}

/// Indent every line of `text` by `n` spaces (empty lines stay empty), and
/// drop the final newline, for a YAML block scalar.
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.trim_end_matches('\n')
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_sections() {
        let t = "a {{ x }} b\n{% if on %}\nkept {{x}}\n{% endif %}\n{% if off %}\ndropped\n{% endif %}\nz\n";
        let out = render(t, &[("x", "1".into())], &[("on", true), ("off", false)]).unwrap();
        assert_eq!(out, "a 1 b\nkept 1\nz\n");
        let e = render("ok\n{{ y }}\n", &[], &[]).unwrap_err();
        assert_eq!(e.to_string(), "unknown placeholder {{y}}");
        let e = render("ok\n{% if on %}\n", &[], &[("on", true)]).unwrap_err();
        assert!(e.to_string().starts_with("line 2: syntax error"), "{e}");
        assert!(render("{% if a %}\nx\n", &[], &[("a", true)]).is_err());
        assert!(render("{% endif %}\n", &[], &[]).is_err());
        assert!(render("{{x\n", &[("x", "1".into())], &[]).is_err());
        // A flag the template tests but is not given is an error, not "off".
        assert!(render("{% if b %}\nx\n{% endif %}\n", &[], &[]).is_err());
        // Nested sections: an inner one inside a dropped one stays dropped.
        let t = "{% if off %}\n{% if on %}\nno\n{% endif %}\n{% endif %}\nyes\n";
        assert_eq!(
            render(t, &[], &[("on", true), ("off", false)]).unwrap(),
            "yes\n"
        );
    }

    #[test]
    fn values_are_data_never_templates() {
        let out = render(
            "v={{ v }}\n",
            &[("v", "{{ lookup('pipe', 'touch /tmp/x') }} <&>".into())],
            &[],
        )
        .unwrap();
        assert_eq!(out, "v={{ lookup('pipe', 'touch /tmp/x') }} <&>\n");
    }

    #[test]
    fn indentation_for_yaml() {
        assert_eq!(indent("a\n\nb\n", 2), "  a\n\n  b");
    }
}
