//! Compose's variables: `${VAR}`, `${VAR:-default}` and the other forms of
//! the compose specification, and the `.env` file format (pure).

/// Fills the variables of `text` from `lookup`. Unset variables without a
/// default become empty and are named in `unset` (compose warns likewise).
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end =
                closing_brace(inner).ok_or_else(|| format!("an unclosed `${{` in \"{text}\""))?;
            out.push_str(&braced(&inner[..end], lookup, unset, text)?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                // A lone `$` stays as it is.
                out.push('$');
                rest = after;
            } else {
                out.push_str(&value(&after[..len], lookup, unset));
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn name_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.first()
        .is_none_or(|c| !(c.is_ascii_alphabetic() || *c == b'_'))
    {
        return 0;
    }
    b.iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count()
}

/// The index of the `}` closing a `${` whose inside starts `s`.
pub fn closing_brace(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' if b.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

fn value(name: &str, lookup: &dyn Fn(&str) -> Option<String>, unset: &mut Vec<String>) -> String {
    lookup(name).unwrap_or_else(|| {
        if !unset.iter().any(|u| u == name) {
            unset.push(name.to_string());
        }
        String::new()
    })
}

fn braced(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
    text: &str,
) -> Result<String, String> {
    let len = name_len(inner);
    let (name, op) = inner.split_at(len);
    if name.is_empty() {
        return Err(format!("`${{{inner}}}` in \"{text}\" names no variable"));
    }
    let var = lookup(name);
    let set_nonempty = var.as_deref().is_some_and(|v| !v.is_empty());
    let nested = |s: &str, unset: &mut Vec<String>| interpolate(s, lookup, unset);
    for (prefix, colon) in [(":-", true), ("-", false)] {
        if let Some(default) = op.strip_prefix(prefix) {
            let use_var = if colon { set_nonempty } else { var.is_some() };
            return if use_var {
                Ok(var.unwrap_or_default())
            } else {
                nested(default, unset)
            };
        }
    }
    for (prefix, colon) in [(":?", true), ("?", false)] {
        if let Some(message) = op.strip_prefix(prefix) {
            let ok = if colon { set_nonempty } else { var.is_some() };
            return if ok {
                Ok(var.unwrap_or_default())
            } else {
                let message = nested(message, unset)?;
                Err(if message.is_empty() {
                    format!("the variable {name} must be set")
                } else {
                    format!("the variable {name} must be set: {message}")
                })
            };
        }
    }
    for (prefix, colon) in [(":+", true), ("+", false)] {
        if let Some(alt) = op.strip_prefix(prefix) {
            let use_alt = if colon { set_nonempty } else { var.is_some() };
            return if use_alt {
                nested(alt, unset)
            } else {
                Ok(String::new())
            };
        }
    }
    if op.is_empty() {
        return Ok(value(name, lookup, unset));
    }
    Err(format!(
        "`${{{inner}}}` in \"{text}\": after the name, compose allows :-, -, :?, ?, :+ or +"
    ))
}

/// One `KEY=VALUE` of an env file, with its line.
pub type Entry = (usize, String, String);

/// Parses a `.env` or `env_file` text: `KEY=VALUE` lines, `export `
/// prefixes, `#` comments, single quotes (literal), double quotes (escapes
/// and variables) and unquoted values (variables, a ` #` comment ends them).
/// Variables refer to earlier lines first, then to `lookup`.
pub fn dotenv(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<Vec<Entry>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out: Vec<Entry> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, raw)) = lines.next() {
        let line_no = i + 1;
        let line = raw.trim_end_matches('\r').trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, val)) = line
            .split_once('=')
            .map(|(k, v)| (k.trim_end(), v.trim_start()))
        else {
            // A bare KEY passes the caller's value on (none: left out).
            let key = line.trim_end();
            if name_len(key) != key.len() {
                return Err((
                    line_no,
                    format!("`{key}` is not a variable name; a line is KEY=VALUE"),
                ));
            }
            if let Some(v) = lookup(key) {
                out.push((line_no, key.to_string(), v));
            }
            continue;
        };
        if name_len(key) != key.len() {
            return Err((
                line_no,
                format!("`{key}` is not a variable name; a line is KEY=VALUE"),
            ));
        }
        let known = |out: &[Entry], n: &str| {
            out.iter()
                .rev()
                .find(|(_, k, _)| k == n)
                .map(|(_, _, v)| v.clone())
                .or_else(|| lookup(n))
        };
        let value = if let Some(q) = val.strip_prefix('\'') {
            match q.find('\'') {
                Some(end) => q[..end].to_string(),
                None => return Err((line_no, "an unclosed single quote".into())),
            }
        } else if let Some(q) = val.strip_prefix('"') {
            // A double-quoted value may span lines.
            let mut body = q.to_string();
            let end = loop {
                if let Some(end) = unescaped_quote(&body) {
                    break end;
                }
                match lines.next() {
                    Some((_, more)) => {
                        body.push('\n');
                        body.push_str(more.trim_end_matches('\r'));
                    }
                    None => return Err((line_no, "an unclosed double quote".into())),
                }
            };
            let unescaped = unescape(&body[..end]);
            let snapshot = out.clone();
            interpolate(&unescaped, &|n| known(&snapshot, n), unset).map_err(|e| (line_no, e))?
        } else {
            let v = match val.find(" #") {
                Some(c) => &val[..c],
                None => val,
            }
            .trim_end();
            let snapshot = out.clone();
            interpolate(v, &|n| known(&snapshot, n), unset).map_err(|e| (line_no, e))?
        };
        out.push((line_no, key.to_string(), value));
    }
    Ok(out)
}

fn unescaped_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => return Some(i),
            _ => escaped = false,
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // `\$` is a literal `$`: written as compose's `$$` for the
            // interpolation that follows.
            Some('$') => out.push_str("$$"),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(n: &str) -> Option<String> {
        match n {
            "SET" => Some("v".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn i(s: &str) -> Result<String, String> {
        interpolate(s, &env, &mut Vec::new())
    }

    #[test]
    fn the_specification_forms() {
        assert_eq!(i("a${SET}b$SET-$$SET$").unwrap(), "avbv-$SET$");
        assert_eq!(i("${NONE:-5432}:5432").unwrap(), "5432:5432");
        assert_eq!(i("${EMPTY:-d}|${EMPTY-d}|${NONE-d}").unwrap(), "d||d");
        assert_eq!(i("${NONE:-${SET:-x}}").unwrap(), "v");
        assert_eq!(
            i("${SET:+alt}|${EMPTY:+alt}|${EMPTY+alt}").unwrap(),
            "alt||alt"
        );
        assert!(i("${NONE:?needs it}").unwrap_err().contains("needs it"));
        assert_eq!(i("${EMPTY?x}").unwrap(), "");
        assert!(i("${SET").is_err());
        assert!(i("${SET/x}").is_err());
        let mut unset = Vec::new();
        assert_eq!(interpolate("${NONE}$NONE", &env, &mut unset).unwrap(), "");
        assert_eq!(unset, ["NONE"]);
    }

    #[test]
    fn env_files() {
        let text = "\u{feff}# c\r\nexport A=1\r\nB = 'x ${A}' \nC=\"q\\n${A}\\$A\"\nD=plain # comment\nE=${A}${SET}\nM=\"two\nlines\"\nSET\nF\n";
        let got = dotenv(text, &env, &mut Vec::new()).unwrap();
        let kv: Vec<(&str, &str)> = got
            .iter()
            .map(|(_, k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            kv,
            [
                ("A", "1"),
                ("B", "x ${A}"),
                ("C", "q\n1$A"),
                ("D", "plain"),
                ("E", "1v"),
                ("M", "two\nlines"),
                // A bare name takes the caller's value, or is left out.
                ("SET", "v")
            ]
        );
        assert_eq!(dotenv("1A=x\n", &env, &mut Vec::new()).unwrap_err().0, 1);
        assert_eq!(dotenv("\nA=\"x\n", &env, &mut Vec::new()).unwrap_err().0, 2);
    }
}
