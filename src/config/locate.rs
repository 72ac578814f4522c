//! YAML paths (`protected[1].allow.worker[0]`) and finding where such a path
//! sits in the file text, so that errors found after deserialization (unknown
//! class, duplicate rule id, ...) can still say "line 42, column 7".
//!
//! The trick: re-read the text with serde_norway through a visitor that walks
//! down the path and fails on purpose when it reaches the target node.
//! serde_norway stamps every error raised while a node is being read with that
//! node's position, so the error's location is the node's location. This reuses
//! the real YAML parser (anchors, flow style, quoting all behave exactly as in
//! the load itself) and costs nothing unless there is an error to report.

use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a [`YamlPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A path into the YAML document, displayed as `protected[1].allow.worker[0]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    pub fn root() -> YamlPath {
        YamlPath(Vec::new())
    }
    pub fn key(&self, k: &str) -> YamlPath {
        let mut v = self.0.clone();
        v.push(Seg::Key(k.to_owned()));
        YamlPath(v)
    }
    pub fn index(&self, i: usize) -> YamlPath {
        let mut v = self.0.clone();
        v.push(Seg::Index(i));
        YamlPath(v)
    }
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Which part of a mapping entry to point at: the key (`wrker:` in
/// `allow: {wrker: [read]}`) or the value after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Key,
    Value,
}

const FOUND: &str = "\u{0}pgward-locate-found";

/// 1-based (line, column) of the node at `path` in `text`, or of the nearest
/// ancestor that exists; `None` when nothing can be located (e.g. bad YAML).
pub fn locate(text: &str, path: &YamlPath, target: Target) -> Option<(usize, usize)> {
    let mut segs: &[Seg] = &path.0;
    loop {
        if let Some(found) = locate_exact(text, segs, target) {
            return Some(found);
        }
        if segs.is_empty() {
            return None;
        }
        segs = &segs[..segs.len() - 1];
    }
}

fn locate_exact(text: &str, segs: &[Seg], target: Target) -> Option<(usize, usize)> {
    if segs.is_empty() {
        // The root: point at the start of the document's first node.
        return Some((1, 1));
    }
    let de = serde_norway::Deserializer::from_str(text);
    match (Walker { segs, target }).deserialize(de) {
        Ok(()) => None,
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        Err(_) => None,
    }
}

/// Walks `segs` down from the current node. Always ends by returning an error
/// containing [`FOUND`] (target reached) or `Ok(())` (path absent).
struct Walker<'a> {
    segs: &'a [Seg],
    target: Target,
}

impl<'de> DeserializeSeed<'de> for Walker<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walker<'_> {
    fn here<E: de::Error>(&self) -> Result<(), E> {
        if self.segs.is_empty() {
            Err(E::custom(FOUND))
        } else {
            // A scalar where the path expects more: the path does not exist.
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for Walker<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.here()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.here()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.here()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.here()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.here()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.here()
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.segs.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let want = match first {
            Seg::Index(n) => Some(*n),
            Seg::Key(_) => None,
        };
        let mut i = 0;
        loop {
            if Some(i) == want {
                let walker = Walker {
                    segs: rest,
                    target: self.target,
                };
                if seq.next_element_seed(walker)?.is_none() {
                    return Ok(());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.segs.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let want = match first {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        };
        let fail_on_key = rest.is_empty() && self.target == Target::Key;
        loop {
            let seed = KeySeed {
                want,
                fail: fail_on_key,
            };
            match map.next_key_seed(seed)? {
                None => return Ok(()),
                Some(true) => {
                    let walker = Walker {
                        segs: rest,
                        target: self.target,
                    };
                    map.next_value_seed(walker)?;
                }
                Some(false) => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
    }
}

/// Reads one mapping key; yields whether it is the wanted one, or fails (at
/// the key's position) when the key itself is the target.
struct KeySeed<'a> {
    want: Option<&'a str>,
    fail: bool,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl KeySeed<'_> {
    fn check<E: de::Error>(&self, key: &str) -> Result<bool, E> {
        let hit = self.want == Some(key);
        if hit && self.fail {
            Err(E::custom(FOUND))
        } else {
            Ok(hit)
        }
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        self.check(v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<bool, E> {
        self.check(&v.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
a: 1
protected:
  - id: one
    allow:
      worker: [read]
  - id: two
    allow: { wrker: [read, write] }
";

    #[test]
    fn finds_keys_values_and_indices() {
        let p = YamlPath::root()
            .key("protected")
            .index(1)
            .key("allow")
            .key("wrker");
        assert_eq!(p.to_string(), "protected[1].allow.wrker");
        assert_eq!(locate(DOC, &p, Target::Key), Some((7, 14)));
        assert_eq!(locate(DOC, &p.index(1), Target::Value), Some((7, 28)));
        let id = YamlPath::root().key("protected").index(0).key("id");
        assert_eq!(locate(DOC, &id, Target::Value), Some((3, 9)));
        assert_eq!(locate(DOC, &id, Target::Key), Some((3, 5)));
        // Absent: falls back to the nearest ancestor that exists.
        let absent = YamlPath::root().key("protected").index(0).key("nope");
        assert_eq!(locate(DOC, &absent, Target::Key), Some((3, 5)));
    }
}
