//! Paged lists: `GET /books?limit=N&after=ID` — the query's rules and the `Link` to the next
//! page (DESIGN.md "Paged lists"). A twin file: both services keep an identical copy
//! (docs/decisions/0010-twin-code.md), so the two list routes accept exactly the same input.
//!
//! - `after` (default 0): only books with a greater id; `limit` (default
//!   [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]): at most that many, ordered by id.
//! - Values are decimal digits only: a sign, a space, a fraction, an exponent, an empty value,
//!   a number out of range or a parameter given twice is refused with a message naming it.
//!   Other parameters are ignored (cache busters, tracking tags).
//! - A full page may have more after it: it links to the next one, `after` its last id. A short
//!   page is the last one and links nowhere. (A full last page links to an empty one.)

/// `limit` when the query has none.
pub const DEFAULT_LIMIT: u32 = 100;
/// The largest `limit` accepted: a page stays a bounded amount of work and bytes.
pub const MAX_LIMIT: u32 = 1000;

/// A valid page request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageQuery {
    /// At most this many books, 1..=[`MAX_LIMIT`].
    pub limit: u32,
    /// Only books whose id is greater (exclusive), 0..=`i64::MAX`.
    pub after: i64,
}

impl Default for PageQuery {
    fn default() -> PageQuery {
        PageQuery {
            limit: DEFAULT_LIMIT,
            after: 0,
        }
    }
}

impl PageQuery {
    /// The page the query's `(name, value)` pairs (already percent-decoded) ask for; the error
    /// is the message a client gets with its 400.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<PageQuery, String> {
        let (mut limit, mut after) = (None, None);
        for (name, value) in pairs {
            let slot = match name {
                "limit" => &mut limit,
                "after" => &mut after,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(format!("{name} is given more than once"));
            }
        }
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => digits(raw)
                .and_then(|text| text.parse::<u32>().ok())
                .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                .ok_or_else(|| {
                    format!("limit must be an integer from 1 to {MAX_LIMIT}, not {raw:?}")
                })?,
        };
        let after = match after {
            None => 0,
            Some(raw) => digits(raw)
                .and_then(|text| text.parse::<i64>().ok())
                .ok_or_else(|| {
                    format!(
                        "after must be a book id, an integer from 0 to {}, not {raw:?}",
                        i64::MAX
                    )
                })?,
        };
        Ok(PageQuery { limit, after })
    }

    /// The `Link` header value for a page of `len` books whose last id is `last_id`: the next
    /// page when this one is full, `None` when it is the last.
    pub fn next_link(&self, len: usize, last_id: Option<i64>) -> Option<String> {
        let full = u32::try_from(len).is_ok_and(|len| len >= self.limit);
        let last = last_id.filter(|_| full)?;
        Some(format!(
            "</books?limit={}&after={last}>; rel=\"next\"",
            self.limit
        ))
    }
}

/// `text` when it is one or more ASCII digits (so `+5`, `-1`, ` 5`, `5.0` and `1e3` are not).
fn digits(text: &str) -> Option<&str> {
    (!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&'static str, &'static str)]) -> Result<PageQuery, String> {
        PageQuery::from_pairs(query.iter().copied())
    }

    #[test]
    fn defaults_apply_to_what_the_query_leaves_out() {
        assert_eq!(parse(&[]), Ok(PageQuery::default()));
        assert_eq!(
            parse(&[("after", "7"), ("utm", "x")]),
            Ok(PageQuery {
                limit: DEFAULT_LIMIT,
                after: 7
            })
        );
        assert_eq!(
            parse(&[("limit", "1000"), ("after", "9223372036854775807")]),
            Ok(PageQuery {
                limit: MAX_LIMIT,
                after: i64::MAX
            })
        );
        assert_eq!(
            parse(&[("limit", "007"), ("after", "0")]),
            Ok(PageQuery { limit: 7, after: 0 })
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        let cases: [(&str, &str); 18] = [
            ("limit", "0"),
            ("limit", "1001"),
            ("limit", "-1"),
            ("limit", "+5"),
            ("limit", " 5"),
            ("limit", "5.0"),
            ("limit", "1e3"),
            ("limit", ""),
            ("limit", "abc"),
            ("limit", "4294967296"),
            ("limit", "99999999999999999999999"),
            ("after", "-1"),
            ("after", ""),
            ("after", "x"),
            ("after", "1.5"),
            ("after", "9223372036854775808"),
            ("after", "99999999999999999999999"),
            ("after", "0x10"),
        ];
        for (name, value) in cases {
            let error = parse(&[(name, value)]).expect_err(value);
            assert!(error.starts_with(name), "{name}={value:?}: {error}");
        }
        let twice = parse(&[("limit", "5"), ("limit", "6")]).expect_err("twice");
        assert!(twice.contains("more than once"), "{twice}");
    }

    #[test]
    fn only_a_full_page_links_to_the_next() {
        let query = PageQuery { limit: 2, after: 5 };
        assert_eq!(
            query.next_link(2, Some(9)).as_deref(),
            Some("</books?limit=2&after=9>; rel=\"next\"")
        );
        assert_eq!(query.next_link(1, Some(9)), None);
        assert_eq!(query.next_link(0, None), None);
    }
}
