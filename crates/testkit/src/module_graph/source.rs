//! Reading Rust source as text: blanking comments and literals, dropping `#[cfg(test)]`
//! items, and finding the top-level modules a file names.

/// `text` with every comment, string and char literal replaced by spaces (newlines kept), so
/// offsets and line numbers stay those of the original.
pub(super) fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = chars.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c == 'r' && matches!(next, Some('#' | '"')) && !ident_before(&chars, i) {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let closing: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = i + 2 + hashes;
            let end = (body..chars.len())
                .find(|&j| chars[j..].starts_with(&closing))
                .map_or(chars.len(), |j| j + closing.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(chars.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the first ends
            // with a quote right after one character or an escape.
            let end = if next == Some('\\') {
                // Past the escaped character, which may itself be a quote ('\'').
                chars
                    .get(i + 3..)
                    .and_then(|rest| rest.iter().position(|&c| c == '\''))
                    .map(|n| i + 3 + n + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn ident_before(chars: &[char], at: usize) -> bool {
    at > 0 && is_ident(chars[at - 1])
}

/// `code` (already blanked) with every `#[cfg(test)]` item blanked too, and the names of the
/// `#[cfg(test)] mod name;` it declares.
pub(super) fn drop_test_items(code: &str) -> (String, Vec<String>) {
    const MARK: &str = "#[cfg(test)]";
    let mut out: Vec<u8> = code.as_bytes().to_vec();
    let mut test_modules = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(found) = code[from..].find(MARK) {
        let start = from + found;
        let mut j = start + MARK.len();
        // The item ends at its first `;` outside braces, or at the brace that closes its body.
        let mut depth = 0usize;
        let end = loop {
            let Some(&b) = bytes.get(j) else {
                break bytes.len();
            };
            match b {
                b'{' => depth += 1,
                b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break j + 1;
                    }
                }
                b';' if depth == 0 => break j + 1,
                _ => {}
            }
            j += 1;
        };
        let item = &code[start + MARK.len()..end];
        if item.trim_end().ends_with(';') && !item.contains('{') {
            let words: Vec<&str> = item
                .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
                .split_whitespace()
                .collect();
            if let [.., "mod", name] = words.as_slice() {
                test_modules.push((*name).to_owned());
            }
        }
        for b in &mut out[start..end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
        from = end;
    }
    let code = String::from_utf8(out).expect("only ASCII bytes were replaced");
    (code, test_modules)
}

/// The top-level modules `code` names, with the byte offset of each mention. `module` is the
/// path of the module the file holds, for resolving `super::`.
pub(super) fn references(code: &str, module: &[String]) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let ident_at = |at: usize| -> &str {
        let rest = &code[at..];
        let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        &rest[..len]
    };
    let skip_space = |mut at: usize| {
        while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
            at += 1;
        }
        at
    };
    let mut at = 0;
    while at < code.len() {
        let before_ok = at == 0 || !(is_ident(bytes[at - 1] as char) || bytes[at - 1] == b'$');
        if !before_ok || !bytes[at].is_ascii_alphabetic() {
            at += 1;
            continue;
        }
        let word = ident_at(at);
        let start = at;
        at += word.len().max(1);
        // How many levels above the crate root the path starts: `crate` is 0 levels below
        // it; each `super` goes one level up from `module`.
        let mut depth = match word {
            "crate" => 0,
            "super" => module.len().saturating_sub(1),
            _ => continue,
        };
        let mut cursor = at;
        loop {
            let sep = skip_space(cursor);
            if !code[sep..].starts_with("::") {
                break;
            }
            let next = skip_space(sep + 2);
            if word == "super" && ident_at(next) == "super" && depth > 0 {
                depth -= 1;
                cursor = next + "super".len();
                continue;
            }
            if depth > 0 {
                break;
            }
            if bytes.get(next) == Some(&b'{') {
                for (name, offset) in group_heads(code, next) {
                    found.push((name, offset));
                }
            } else {
                let name = ident_at(next);
                if !name.is_empty() && name != "self" {
                    found.push((name.to_owned(), start));
                }
            }
            break;
        }
    }
    found
}

/// The first name of each path in the `{ … }` group opening at `open`.
fn group_heads(code: &str, open: usize) -> Vec<(String, usize)> {
    let bytes = code.as_bytes();
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut at = open;
    while at < bytes.len() {
        let b = bytes[at];
        match b {
            b'{' => {
                depth += 1;
                expect_head = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => expect_head = true,
            _ if expect_head && depth == 1 && (b.is_ascii_alphanumeric() || b == b'_') => {
                let rest = &code[at..];
                let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
                let name = &rest[..len];
                if name != "self" {
                    heads.push((name.to_owned(), at));
                }
                expect_head = false;
                at += len;
                continue;
            }
            _ => {}
        }
        at += 1;
    }
    heads
}
