//! The framing lines of a chunked request body, checked as the client's bytes arrive.
//!
//! Pingora parses chunk-size lines with `httparse`, which takes any byte in a chunk extension,
//! a bare line feed included, and a trailer line without a colon. A load balancer in front
//! that ends a line at a bare LF (as many do) then splits the body elsewhere than the router:
//! bytes it sends as the next client's request are, to the router, this body's, or the other
//! way round, and the requests of clients sharing the balancer's connection are smuggled into
//! one another (the chunk-extension desync: RFC 9112 §7.1.1 allows only tokens and quoted
//! strings there). The stream scans every chunk-size line and trailer line of a chunked body
//! and refuses one that holds a control character (a tab aside), a CR not followed by LF or an
//! LF not preceded by CR, a size that is not hex digits, or a trailer line that is no field.
//! Chunk data is skipped by its size, unread; the scan ends with the body.

/// Why a chunked body's framing was refused (a fixed text, for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunkLine(pub &'static str);

/// Where the scan is in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// A chunk-size line: hex digits so far (and whether all were `0`), whether the digits
    /// have ended (blanks, then an extension), whether in an extension, and whether the last
    /// byte was a CR.
    Size {
        digits: u8,
        zero: bool,
        ended: bool,
        ext: bool,
        cr: bool,
    },
    /// A chunk's data, bytes left.
    Data(u64),
    /// After a chunk's data: the CR, then the LF.
    DataCr,
    DataLf,
    /// The trailer section: the current line's length, whether it holds a colon, and whether
    /// its last byte was a CR.
    Trailer {
        len: usize,
        colon: bool,
        cr: bool,
    },
    /// The body has ended; what follows is the next request's.
    Done,
}

const SIZE_LINE: At = At::Size {
    digits: 0,
    zero: true,
    ended: false,
    ext: false,
    cr: false,
};

/// A control character a line of chunked framing may not hold (HTAB is a blank).
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// The scan of one chunked body, fed its bytes in the order they arrive.
#[derive(Debug, Clone)]
pub(super) struct ChunkScan {
    at: At,
    size: u64,
}

impl Default for ChunkScan {
    fn default() -> Self {
        Self {
            at: SIZE_LINE,
            size: 0,
        }
    }
}

impl ChunkScan {
    /// Whether the body has ended (bytes after its end are not scanned).
    pub(super) fn done(&self) -> bool {
        self.at == At::Done
    }

    /// Scans the next bytes of the body (and stops at its end).
    pub(super) fn scan(&mut self, mut bytes: &[u8]) -> Result<(), BadChunkLine> {
        while let Some((&b, rest)) = bytes.split_first() {
            match &mut self.at {
                At::Done => return Ok(()),
                At::Data(left) => {
                    // Data is skipped whole, by its size.
                    let n = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    *left -= n as u64;
                    if *left == 0 {
                        self.at = At::DataCr;
                    }
                    bytes = &bytes[n..];
                    continue;
                }
                At::DataCr if b == b'\r' => self.at = At::DataLf,
                At::DataLf if b == b'\n' => self.at = SIZE_LINE,
                At::DataCr | At::DataLf => {
                    return Err(BadChunkLine("a chunk's data is not followed by CRLF"))
                }
                At::Size { cr: true, .. } if b != b'\n' => {
                    return Err(BadChunkLine(
                        "a CR in a chunk-size line is not followed by LF",
                    ))
                }
                At::Size { cr, digits, .. } if *cr => {
                    if *digits == 0 {
                        return Err(BadChunkLine("a chunk-size line without a size"));
                    }
                    let zero = matches!(self.at, At::Size { zero: true, .. });
                    self.at = if zero {
                        At::Trailer {
                            len: 0,
                            colon: false,
                            cr: false,
                        }
                    } else {
                        At::Data(self.size)
                    };
                    self.size = 0;
                }
                At::Size { cr, .. } if b == b'\r' => *cr = true,
                At::Size { .. } if b == b'\n' => {
                    return Err(BadChunkLine("a bare LF in a chunk-size line"))
                }
                At::Size { .. } if is_ctl(b) => {
                    return Err(BadChunkLine("a control character in a chunk-size line"))
                }
                At::Size { ext: true, .. } => {}
                At::Size {
                    digits,
                    zero,
                    ended: false,
                    ..
                } if b.is_ascii_hexdigit() => {
                    if *digits >= 16 {
                        return Err(BadChunkLine("a chunk size of more than 16 hex digits"));
                    }
                    *digits += 1;
                    *zero &= b == b'0';
                    let value = (b as char).to_digit(16).unwrap_or(0);
                    self.size = (self.size << 4) | u64::from(value);
                }
                At::Size { digits, ended, .. } if (b == b' ' || b == b'\t') && *digits > 0 => {
                    *ended = true;
                }
                At::Size { digits, ext, .. } if b == b';' && *digits > 0 => *ext = true,
                At::Size { .. } => return Err(BadChunkLine("a chunk size that is not hex digits")),
                At::Trailer { cr: true, .. } if b != b'\n' => {
                    return Err(BadChunkLine("a CR in a trailer line is not followed by LF"))
                }
                At::Trailer { cr, len, colon } if *cr => {
                    if *len == 0 {
                        self.at = At::Done;
                    } else if !*colon {
                        return Err(BadChunkLine("a trailer line that is no field"));
                    } else {
                        *len = 0;
                        *colon = false;
                        *cr = false;
                    }
                }
                At::Trailer { cr, .. } if b == b'\r' => *cr = true,
                At::Trailer { .. } if b == b'\n' => {
                    return Err(BadChunkLine("a bare LF in the trailer section"))
                }
                At::Trailer { .. } if is_ctl(b) => {
                    return Err(BadChunkLine("a control character in a trailer line"))
                }
                At::Trailer { len: 0, .. } if b == b' ' || b == b'\t' => {
                    return Err(BadChunkLine("a folded trailer line"))
                }
                At::Trailer { len, colon, .. } => {
                    *len += 1;
                    *colon |= b == b':';
                }
            }
            bytes = rest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `body` whole, and again one byte at a time: the outcome must not depend on how
    /// the bytes arrive.
    fn scan(body: &[u8]) -> (Result<(), BadChunkLine>, bool) {
        let mut whole = ChunkScan::default();
        let outcome = whole.scan(body);
        let mut bytewise = ChunkScan::default();
        let piecewise = body
            .iter()
            .try_for_each(|b| bytewise.scan(std::slice::from_ref(b)));
        assert_eq!(outcome, piecewise, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(whole.done(), bytewise.done());
        (outcome, whole.done())
    }

    #[test]
    fn well_framed_bodies_pass_and_end_where_they_end() {
        for body in [
            &b"0\r\n\r\n"[..],
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;name=value\r\nhel\nl\r\n0\r\n\r\n",
            b"5 ;a=\"q s\"\t;b\r\nhello\r\n00\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\nX-Sum: 1\r\nY:\t2\r\n\r\n",
            b"ffffffff\r\n",
            b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\n\n",
        ] {
            let (outcome, _) = scan(body);
            assert_eq!(outcome, Ok(()), "{:?}", String::from_utf8_lossy(body));
        }
        assert!(scan(b"5\r\nhello\r\n0\r\n\r\n").1);
        assert!(!scan(b"5\r\nhello\r\n0\r\nX: 1\r\n").1);
        // What follows the end is the next request's, not scanned.
        assert!(scan(b"0\r\n\r\n\x00\n").1);
    }

    #[test]
    fn framing_another_parser_could_split_elsewhere_is_refused() {
        for (body, why) in [
            (&b"5;a\nb\r\nhello\r\n0\r\n\r\n"[..], "bare LF"),
            (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", "control character"),
            (b"5;a\rb\r\nhello\r\n0\r\n\r\n", "not followed by LF"),
            (b"0;x\ny\r\n\r\n", "bare LF"),
            (b"5\nhello\r\n0\r\n\r\n", "bare LF"),
            (b"5x\r\nhello\r\n0\r\n\r\n", "not hex digits"),
            (b"0x5\r\nhello\r\n0\r\n\r\n", "not hex digits"),
            (b" 5\r\nhello\r\n0\r\n\r\n", "not hex digits"),
            (b"5 5\r\nhello\r\n0\r\n\r\n", "not hex digits"),
            (b";x\r\n", "not hex digits"),
            (b"\r\n", "without a size"),
            (b"11111111111111111\r\n", "16 hex digits"),
            (b"5\r\nhelloXY0\r\n\r\n", "not followed by CRLF"),
            (b"5\r\nhello\n0\r\n\r\n", "not followed by CRLF"),
            (b"0\r\nno colon here\r\n\r\n", "no field"),
            (b"0\r\nX: 1\nY: 2\r\n\r\n", "bare LF"),
            (b"0\r\nX: 1\r\n folded\r\n\r\n", "folded"),
            (b"0\r\nX: \x01\r\n\r\n", "control character"),
            (b"0\r\n\n", "bare LF"),
        ] {
            let (outcome, _) = scan(body);
            let Err(BadChunkLine(text)) = outcome else {
                panic!("passed: {:?}", String::from_utf8_lossy(body));
            };
            assert!(
                text.contains(why),
                "{:?}: {text}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
