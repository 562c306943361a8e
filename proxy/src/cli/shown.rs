//! What the CLI prints of text it did not write: a hand-forged audit entry, a heartbeat
//! key, a record in the store. A control character there would drive the reader's terminal
//! (clear the screen, move the cursor, forge a line), an invisible one make an entry read as
//! another: each is printed as an escape instead.

use std::borrow::Cow;

use crate::invisible::is_invisible;

/// `text` with every control character (line feeds and tabs aside: the output's own layout)
/// and every invisible one written as `\uXXXX` (a UTF-16 escape, so that text inside a JSON
/// string stays JSON).
pub(crate) fn escaped(text: &str) -> Cow<'_, str> {
    escaped_if(text, |c| c == '\n' || c == '\t')
}

/// One value the store holds, for a line of text: as [`escaped`], line feeds and tabs too, so
/// that a value cannot end its line and forge the next (an audit entry's actor, a replica's
/// id).
pub(crate) fn one_line(text: &str) -> Cow<'_, str> {
    escaped_if(text, |_| false)
}

/// `text` with the characters a terminal acts on or hides escaped, but for the controls
/// `kept` lets through.
fn escaped_if(text: &str, kept: impl Fn(char) -> bool) -> Cow<'_, str> {
    let hidden = |c: char| {
        (c.is_control() && !kept(c)) || matches!(c, '\u{2028}' | '\u{2029}') || is_invisible(c)
    };
    if !text.chars().any(hidden) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if hidden(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_invisibles_are_escaped_and_nothing_else() {
        assert_eq!(escaped("acme  rev 3\n\tx"), "acme  rev 3\n\tx");
        assert_eq!(escaped("caf\u{e9} \u{4e2d}"), "caf\u{e9} \u{4e2d}");
        assert_eq!(
            escaped("mallory\u{1b}[2K\r\u{1b}[32mrev 99"),
            "mallory\\u001b[2K\\u000d\\u001b[32mrev 99"
        );
        assert_eq!(escaped("ok\u{202e}evil"), "ok\\u202eevil");
        assert_eq!(escaped("\u{2800}"), "\\u2800");
        assert_eq!(
            one_line("alice\nrev 16  bob\t"),
            "alice\\u000arev 16  bob\\u0009"
        );
        // Outside the BMP: a surrogate pair, as JSON writes it.
        assert_eq!(escaped("\u{e0041}"), "\\udb40\\udc41");
        let json = serde_json::json!({"actor": "a\u{202e}b"}).to_string();
        let read: serde_json::Value = serde_json::from_str(&escaped(&json)).expect("still JSON");
        assert_eq!(read["actor"], "a\u{202e}b");
    }
}
