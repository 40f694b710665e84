//! Class names: from the model's metadata (`names`, as Ultralytics writes a Python dict:
//! `{0: 'person', 1: 'bicycle'}`) or a labels file (one name per line).

/// Parses Ultralytics' `names` metadata. Returns `None` if it is not a `{int: 'str', …}` dict.
pub fn parse_ultralytics(names: &str) -> Option<Vec<String>> {
    let body = names.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut rest = body.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(':')?;
        let index: usize = key.trim().parse().ok()?;
        let after = after.trim_start();
        let quote = after.chars().next().filter(|c| *c == '\'' || *c == '"')?;
        let close = after[1..].find(quote)? + 1;
        out.push((index, after[1..close].to_owned()));
        rest = after[close + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    out.sort_by_key(|(i, _)| *i);
    out.iter().enumerate().all(|(i, (k, _))| i == *k).then(|| out.into_iter().map(|(_, n)| n).collect())
}

/// Parses a labels file: one class name per line, blank lines ignored.
pub fn parse_labels(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ultralytics_dicts() {
        assert_eq!(parse_ultralytics("{0: 'circle', 1: 'square', 2: 'bar'}").unwrap(), vec!["circle", "square", "bar"]);
        assert_eq!(parse_ultralytics("{1: \"b\", 0: \"a, comma\"}").unwrap(), vec!["a, comma", "b"]);
        assert_eq!(parse_ultralytics("{}").unwrap(), Vec::<String>::new());
        assert!(parse_ultralytics("[a, b]").is_none());
        assert!(parse_ultralytics("{0: 'a', 2: 'c'}").is_none(), "gaps are not names of a contiguous class list");
        assert!(parse_ultralytics("{0: 'unterminated}").is_none());
    }

    #[test]
    fn parses_label_files() {
        assert_eq!(parse_labels("person\n\nbicycle \n"), vec!["person", "bicycle"]);
    }
}
