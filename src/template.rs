//! The small template language of `openvpn/*.tmpl` and
//! `cloud-init/user-data.yaml.tmpl`: `{{name}}` is replaced by a value; a
//! line that is exactly `{{if flag}}` starts a section kept only when the
//! flag is set, up to a line that is exactly `{{end}}`. An unknown name or
//! flag, or an unclosed section, is an error.

/// Errors of a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{{...}}` with a name that has no value.
    #[error("line {line}: unknown placeholder {{{{{name}}}}}")]
    Unknown {
        /// Line number.
        line: usize,
        /// The name.
        name: String,
    },
    /// `{{` without `}}`.
    #[error("line {0}: unclosed {{{{")]
    Unclosed(usize),
    /// `{{if}}` without `{{end}}`, or the reverse.
    #[error("line {0}: unbalanced {{{{if}}}} / {{{{end}}}}")]
    Unbalanced(usize),
}

/// Render `text` with `vars` and the set `flags`.
pub fn render(
    text: &str,
    vars: &[(&str, String)],
    flags: &[&str],
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    // Stack of "keep" states of the open sections.
    let mut keep: Vec<bool> = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        let trimmed = line.trim();
        if let Some(flag) = trimmed
            .strip_prefix("{{if ")
            .and_then(|r| r.strip_suffix("}}"))
        {
            let flag = flag.trim();
            keep.push(flags.contains(&flag));
            continue;
        }
        if trimmed == "{{end}}" {
            keep.pop().ok_or(TemplateError::Unbalanced(n))?;
            continue;
        }
        if keep.iter().any(|k| !k) {
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or(TemplateError::Unclosed(n))?;
            let name = after[..end].trim();
            let value = vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
                .ok_or_else(|| TemplateError::Unknown {
                    line: n,
                    name: name.to_string(),
                })?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    if !keep.is_empty() {
        return Err(TemplateError::Unbalanced(text.lines().count()));
    }
    Ok(out)
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
        let t = "a {{x}} b\n{{if on}}\nkept {{x}}\n{{end}}\n{{if off}}\ndropped\n{{end}}\nz\n";
        let out = render(t, &[("x", "1".into())], &["on"]).unwrap();
        assert_eq!(out, "a 1 b\nkept 1\nz\n");
        assert_eq!(
            render("{{y}}\n", &[], &[]),
            Err(TemplateError::Unknown {
                line: 1,
                name: "y".into()
            })
        );
        assert!(render("{{if a}}\n", &[], &[]).is_err());
        assert!(render("{{end}}\n", &[], &[]).is_err());
        assert!(render("{{x\n", &[], &[]).is_err());
        // Nested sections: an inner one inside a dropped one stays dropped.
        let t = "{{if off}}\n{{if on}}\nno\n{{end}}\n{{end}}\nyes\n";
        assert_eq!(render(t, &[], &["on"]).unwrap(), "yes\n");
    }

    #[test]
    fn indentation_for_yaml() {
        assert_eq!(indent("a\n\nb\n", 2), "  a\n\n  b");
    }
}
