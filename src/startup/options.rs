//! The startup parameter `options`: command-line style settings
//! (`-c name=value`, `-cname=value`, `--name=value`) that libpq, psycopg and
//! JDBC send for the session. pgward reads settings from it (search_path,
//! the tenant) and removes the tenant setting before forwarding it.

/// Splits `options` into words: whitespace separates, backslash escapes the
/// next character (as PostgreSQL's `pg_split_opts` does).
pub fn split(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Joins words back, escaping what `split` would otherwise split on.
pub fn join(words: &[String]) -> String {
    let escape = |w: &String| {
        let mut out = String::with_capacity(w.len());
        for c in w.chars() {
            if c == '\\' || c.is_ascii_whitespace() {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    words.iter().map(escape).collect::<Vec<_>>().join(" ")
}

/// One `name=value` setting found in the words, with the word indices it used.
struct Found {
    /// Lower case, `-` read as `_`, as PostgreSQL folds setting names.
    name: String,
    value: String,
    words: std::ops::Range<usize>,
}

/// Every setting in the words, in order.
fn parse(words: &[String]) -> Vec<Found> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let (setting, used) = if words[i] == "-c" {
            (words.get(i + 1).map(String::as_str), 2)
        } else {
            let w = &words[i];
            (w.strip_prefix("--").or_else(|| w.strip_prefix("-c")), 1)
        };
        if let Some((key, value)) = setting.and_then(|s| s.split_once('=')) {
            found.push(Found {
                name: key.replace('-', "_").to_ascii_lowercase(),
                value: value.to_string(),
                words: i..(i + used).min(words.len()),
            });
        }
        i += used;
    }
    found
}

fn find_all(words: &[String], name: &str) -> Vec<Found> {
    let name = name.to_ascii_lowercase();
    parse(words)
        .into_iter()
        .filter(|f| f.name == name)
        .collect()
}

/// Every `name=value` setting in `options`, in order.
pub fn all_settings(options: &str) -> Vec<(String, String)> {
    parse(&split(options))
        .into_iter()
        .map(|f| (f.name, f.value))
        .collect()
}

/// The value of setting `name` in `options` (the last occurrence wins, as in
/// PostgreSQL).
pub fn setting(options: &str, name: &str) -> Option<String> {
    find_all(&split(options), name).pop().map(|f| f.value)
}

/// Removes every occurrence of setting `name`; returns the values removed
/// and what is left of `options` (`None` when nothing is left).
pub fn take_setting(options: &str, name: &str) -> (Vec<String>, Option<String>) {
    let words = split(options);
    let found = find_all(&words, name);
    if found.is_empty() {
        return (Vec::new(), Some(options.to_string()));
    }
    let keep: Vec<String> = words
        .iter()
        .enumerate()
        .filter(|(i, _)| !found.iter().any(|f| f.words.contains(i)))
        .map(|(_, w)| w.clone())
        .collect();
    let values = found.into_iter().map(|f| f.value).collect();
    let rest = (!keep.is_empty()).then(|| join(&keep));
    (values, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_settings_in_every_form() {
        assert_eq!(
            setting("-c search_path=ops", "search_path").as_deref(),
            Some("ops")
        );
        assert_eq!(
            setting("-csearch_path=a,b", "search_path").as_deref(),
            Some("a,b")
        );
        assert_eq!(
            setting("--search-path=x", "search_path").as_deref(),
            Some("x")
        );
        assert_eq!(
            setting(
                "-c app.current_tenant=acme -c search_path=a,\\ b",
                "search_path"
            )
            .as_deref(),
            Some("a, b")
        );
        assert_eq!(setting("-c statement_timeout=5", "search_path"), None);
    }

    #[test]
    fn takes_a_setting_out_and_keeps_the_rest() {
        let (values, rest) = take_setting(
            "-c app.current_tenant=acme -c statement_timeout=5 --app.current_tenant=globex",
            "app.current_tenant",
        );
        assert_eq!(values, vec!["acme", "globex"]);
        assert_eq!(rest.as_deref(), Some("-c statement_timeout=5"));
        let (values, rest) = take_setting("-capp.current_tenant=acme", "app.current_tenant");
        assert_eq!(values, vec!["acme"]);
        assert_eq!(rest, None);
    }

    #[test]
    fn join_escapes_what_split_splits() {
        let words = vec![
            "-c".to_string(),
            "search_path=a, b".to_string(),
            "x\\\\y".to_string(),
        ];
        assert_eq!(split(&join(&words)), words);
    }
}
