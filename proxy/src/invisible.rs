//! Characters that show as nothing, or reorder the text around them: what makes one name read
//! as another in a terminal, a log or an admin page. The CLI escapes them in what it prints
//! ([`crate::cli::shown`]); the router refuses identity claims holding them
//! ([`crate::auth`]).

/// Characters a terminal shows as nothing, or that reorder the text around them: soft
/// hyphen, zero-width spaces and joiners, direction marks, embeddings, overrides and
/// isolates, invisible operators, variation selectors, tags, fillers, the blank Braille
/// pattern, the byte order mark, and the other format characters (general category Cf,
/// Unicode 15.1: prepended concatenation marks, format controls of historic scripts).
pub fn is_invisible(c: char) -> bool {
    // Unicode's default-ignorable code points (those a renderer shows as nothing unless it
    // knows them) and the format characters among the rest: bidirectional controls and the
    // interlinear annotation characters. U+2800 is no such code point, but every font draws
    // it as a blank.
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}
