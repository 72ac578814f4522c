//! Bounds-checked reading of message bodies.
//!
//! Every read returns `None` instead of panicking when the body is shorter
//! than its fields claim: message bodies come from the network, and a
//! malformed one must end in a protocol error, never a panic. (pgwire's own
//! decoders index into the buffer unchecked for some messages.)

/// A cursor over one message body.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Fields { rest: body }
    }

    /// A NUL-terminated string, as raw bytes without the NUL.
    pub fn cstr_bytes(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        let (s, rest) = self.rest.split_at(end);
        self.rest = &rest[1..];
        Some(s)
    }

    /// A NUL-terminated string that must be UTF-8 (SQL text, names).
    pub fn cstr(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.cstr_bytes()?).ok()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    pub fn i16(&mut self) -> Option<i16> {
        let bytes = self.take(2)?;
        Some(i16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub fn i32(&mut self) -> Option<i32> {
        let bytes = self.take(4)?;
        Some(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(head)
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.rest
    }
}

/// Looks up one field (by its one-byte code, e.g. `b'C'` for SQLSTATE, `b'M'`
/// for the message) of an ErrorResponse or NoticeResponse body.
pub fn error_field(body: &[u8], code: u8) -> Option<&[u8]> {
    let mut f = Fields::new(body);
    loop {
        let c = f.u8()?;
        if c == 0 {
            return None;
        }
        let value = f.cstr_bytes()?;
        if c == code {
            return Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_bodies_yield_none_not_panics() {
        assert_eq!(Fields::new(b"abc").cstr(), None);
        assert_eq!(Fields::new(b"\x00\x01").i32(), None);
        assert_eq!(Fields::new(b"").u8(), None);
        assert_eq!(error_field(b"Cxx", b'C'), None);
    }

    #[test]
    fn reads_fields_in_order() {
        let mut f = Fields::new(b"stmt\0SELECT 1\0\x00\x02");
        assert_eq!(f.cstr(), Some("stmt"));
        assert_eq!(f.cstr(), Some("SELECT 1"));
        assert_eq!(f.i16(), Some(2));
        assert!(f.remaining().is_empty());
    }

    #[test]
    fn finds_error_fields() {
        let body = b"SERROR\0C42501\0Mdenied\0\0";
        assert_eq!(error_field(body, b'C'), Some(&b"42501"[..]));
        assert_eq!(error_field(body, b'M'), Some(&b"denied"[..]));
        assert_eq!(error_field(body, b'H'), None);
    }
}
