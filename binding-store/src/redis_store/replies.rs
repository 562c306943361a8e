//! Reading what Redis answers: entry fields, stored records, script errors and wrong-typed keys.

use redis::aio::MultiplexedConnection;

use super::unavailable;
use crate::admin::AdminError;
use crate::model::{Binding, Interner};
pub(crate) use crate::records::brief;

pub(crate) fn field_u64(fields: &[(Vec<u8>, Vec<u8>)], name: &str) -> u64 {
    field_str(fields, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A field of a feed entry as text; `None` when absent or not UTF-8.
pub(crate) fn field_str<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

/// Text Redis holds where the schema keeps text (a history id, a replica id), with bytes
/// that are no UTF-8 (written by hand) replaced: read as text no replica wrote, never as an
/// error that stops the read of everything beside it.
pub(crate) fn lossy(raw: Vec<u8>) -> String {
    String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A stored record's text, or why it is none: Redis values are bytes, and one that is no
/// UTF-8 must be refused as a record, not fail the whole read.
pub(crate) fn record_text(value: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(value).map_err(|e| format!("the record is not UTF-8 text: {e}"))
}

/// A script's error as (code, detail): `CONFLICT 7` gives ("CONFLICT", "7"). Redis sends a
/// one-word error (`NOTFOUND`) as `ERR NOTFOUND`, so after `ERR` the code is the detail's first
/// word.
pub(crate) fn script_error(e: &redis::RedisError) -> Option<(&str, &str)> {
    match (e.code()?, e.detail().unwrap_or_default()) {
        ("ERR", detail) => Some(detail.split_once(' ').unwrap_or((detail, ""))),
        (code, detail) => Some((code, detail)),
    }
}

/// What a write refused by a script's type check (`KEYTYPE <key> <found> <expected>`, from
/// `write.lua`, `restore.lua` or `history.lua`) stopped, said as `consequence`.
pub(crate) fn wrong_type(e: &redis::RedisError, consequence: &'static str) -> Option<AdminError> {
    let ("KEYTYPE", detail) = script_error(e)? else {
        return None;
    };
    // From the end: the key is the schema's prefix plus a name, and the prefix is any text.
    let mut words = detail.trim_end().rsplitn(3, ' ');
    let (expected, found, key) = (words.next()?, words.next()?, words.next()?);
    Some(AdminError::WrongType {
        key: key.to_owned(),
        found: match found {
            "text" => crate::admin::COUNTER_NOT_A_NUMBER.to_owned(),
            "huge" => crate::admin::COUNTER_TOO_HIGH.to_owned(),
            other => other.to_owned(),
        },
        expected: expected.to_owned(),
        consequence,
    })
}

/// The first of `wanted` (key, the type the schema keeps there) that holds another type, as
/// the error saying so and what that stopped (`consequence`): one pipelined round of `TYPE`.
pub(crate) async fn misplaced(
    con: &mut MultiplexedConnection,
    wanted: &[(String, &'static str)],
    consequence: &'static str,
) -> redis::RedisResult<Option<AdminError>> {
    let mut pipe = redis::pipe();
    for (key, _) in wanted {
        pipe.cmd("TYPE").arg(key);
    }
    let types: Vec<String> = pipe.query_async(con).await?;
    Ok(wanted
        .iter()
        .zip(types)
        .find(|((_, expected), found)| found != "none" && found != expected)
        .map(|((key, expected), found)| AdminError::WrongType {
            key: key.clone(),
            found,
            expected: (*expected).to_owned(),
            consequence,
        }))
}

/// A read of `key` that failed: a key holding another type than the schema's `expected` is
/// named as such, anything else is the store being unavailable.
pub(crate) async fn read_failure(
    con: &mut MultiplexedConnection,
    key: &str,
    e: redis::RedisError,
    expected: &'static str,
) -> AdminError {
    if e.code() != Some("WRONGTYPE") {
        return unavailable(e);
    }
    match misplaced(con, &[(key.to_owned(), expected)], "so it cannot be read").await {
        Ok(Some(named)) => named,
        _ => unavailable(e),
    }
}

/// The revision a `write.lua` error ends with (`CONFLICT 7`, `WIPED 12`); 0 if none.
pub(crate) fn last_number(msg: &str) -> u64 {
    msg.split_whitespace()
        .rev()
        .find_map(|w| w.parse().ok())
        .unwrap_or(0)
}

/// A record must be stored under its own tenant's key: one that names another tenant would
/// take that tenant's routing over.
pub(crate) fn check_key(binding: Binding, key_tenant: &str) -> Result<Binding, String> {
    if binding.tenant_id.as_str() == key_tenant {
        Ok(binding)
    } else {
        Err(format!(
            "the record under tenant {key_tenant:?}'s key names tenant {:?}",
            binding.tenant_id.as_str()
        ))
    }
}

/// The highest revision a stored record may carry, as `write.lua` reads it and replicas take
/// it: 2^52, half of what Lua's doubles hold exactly (2^53). `write.lua` moves the counter up
/// to a record's revision ahead of it (one written by hand), and refuses a write whose
/// revision would pass this: replicas would refuse it, and every write after it.
pub(crate) const MAX_REVISION: u64 = 1 << 52;

/// A stored record's revision, read by the rule `write.lua` follows (its optimistic check
/// compares this): the `revision` member of a JSON object when it is a whole number from 0 to
/// 2^52 ([`MAX_REVISION`]), else 0, so a damaged record reads as 0 on both sides. (Where the script's JSON
/// reader takes a number this one does not, the write goes by the script's.)
pub(crate) fn record_revision(raw: &[u8]) -> u64 {
    const MAX: u64 = MAX_REVISION;
    let text = String::from_utf8_lossy(raw);
    let Ok(serde_json::Value::Object(record)) = serde_json::from_str(&text) else {
        return 0;
    };
    let Some(serde_json::Value::Number(n)) = record.get("revision") else {
        return 0;
    };
    n.as_u64()
        .or_else(|| {
            n.as_f64()
                .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f <= MAX as f64)
                .map(|f| f as u64)
        })
        .filter(|r| *r <= MAX)
        .unwrap_or(0)
}

pub(crate) fn parse_json_record(text: &str) -> Result<Binding, String> {
    parse_json_record_with(text, &mut Interner::default())
}

/// Parses a stored record straight from its JSON text, sharing URLs and ids via `interner`.
pub(crate) fn parse_json_record_with(
    text: &str,
    interner: &mut Interner,
) -> Result<Binding, String> {
    // Read straight into the record (a load reads a million). One that is no object (serde
    // would take an array for the record's fields in order) or that serde refuses is read
    // again as a record in a file is, for the same message: every member of the wrong type,
    // or unknown, named. Only for the message: what serde refused stays refused (a member
    // given twice, which a JSON value keeps once).
    let direct = if crate::json::is_object_text(text.as_bytes()) {
        serde_json::from_str::<crate::model::BindingRecord>(text).map_err(|e| e.to_string())
    } else {
        Err("a binding record is a JSON object".to_owned())
    };
    let record = match direct {
        Ok(record) => record,
        Err(direct) => {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            return Err(match crate::records::parse_record_with(&value, interner) {
                Err((_, message)) => message,
                Ok(_) => direct,
            });
        }
    };
    // `write.lua` reads a revision past 2^52 as 0 (see `MAX_REVISION`), so no write through
    // the schema makes one: believed, it would make every later change of the tenant look
    // older and be refused. Written by hand, it is refused like any other bad member.
    if record.revision > MAX_REVISION {
        return Err(format!(
            "revision {} is past 2^52, which no write through the schema makes (written by \
             hand): replace the record with `nexus-edge tenant put`",
            record.revision
        ));
    }
    Binding::from_record_with(&record, interner)
        .map_err(|errs| crate::error::FieldErrors(&errs).to_string())
}

/// Stream entries as redis-rs returns them: ids, and fields as bytes, so that one entry an
/// outside writer filled with bytes that are no UTF-8 is skipped as invalid instead of failing
/// every read of the feed.
pub(crate) type Entries = Vec<(String, Vec<(Vec<u8>, Vec<u8>)>)>;

#[cfg(test)]
mod tests {
    use super::{parse_json_record, record_revision, script_error, wrong_type, MAX_REVISION};
    use crate::admin::AdminError;
    use redis::{ErrorKind, RedisError};

    #[test]
    fn a_record_stored_as_a_json_array_is_refused() {
        // Read by field order it was a record (revision 9 with it), which `write.lua` and the
        // admin CLI read as no record at all.
        let array = r#"["acme","s","i","http://10.0.0.1",null,null,"active","team","eu",[],9]"#;
        let e = parse_json_record(array).expect_err("an array");
        assert_eq!(e, "a binding record is a JSON object, not an array");
        assert_eq!(record_revision(array.as_bytes()), 0);
    }

    #[test]
    fn a_stored_record_s_wrong_members_are_named_as_a_file_s_are() {
        let record = r#"{"tenant_id":"acme","subscription_id":"s","instance_id":5,
            "instance_url":"http://10.0.0.1","status":true,"plan":"team","region":"eu"}"#;
        assert_eq!(
            parse_json_record(record).expect_err("mistyped"),
            "instance_id: must be a string, not 5; status: must be a string, not true"
        );
        // A null org is refused there too (serde read it as none).
        let null_org = r#"{"tenant_id":"acme","subscription_id":"s","instance_id":"i",
            "instance_url":"http://10.0.0.1","status":"active","plan":"team","region":"eu",
            "identity_org_id":null}"#;
        let e = parse_json_record(null_org).expect_err("null org");
        assert!(e.starts_with("identity_org_id: must be a string"), "{e}");
        // A member given twice stays refused: read as a JSON value it would be kept once.
        let twice = r#"{"tenant_id":"acme","tenant_id":"globex","subscription_id":"s",
            "instance_id":"i","instance_url":"http://10.0.0.1","status":"active",
            "plan":"team","region":"eu"}"#;
        let e = parse_json_record(twice).expect_err("repeated");
        assert!(e.contains("duplicate field `tenant_id`"), "{e}");
    }

    /// The rule `write.lua` follows too. Its JSON reader (Redis's cjson) also takes a few
    /// numbers serde_json refuses (`05`, `0x10`) and rounds integers past 2^53 to doubles;
    /// for those the two readings differ and the write retries with the script's (the e2e
    /// test `the_cli_replaces_or_deletes_a_damaged_record` puts one through real Redis).
    #[test]
    fn a_record_s_revision_reading() {
        let cases: [(&[u8], u64); 12] = [
            (br#"{"revision":7}"#, 7),
            (br#"{ "revision" : 7 }"#, 7),
            (br#"{"revision":7.0}"#, 7),
            (br#"{"revision":4503599627370496}"#, 1 << 52),
            (br#"{"revision":9007199254740992}"#, 0),
            (br#"{"revision":1e300}"#, 0),
            (br#"{"revision":"5"}"#, 0),
            (br#"{"revision":-1}"#, 0),
            (br#"{"revision":5.5}"#, 0),
            (br#"{"revision":5"#, 0),
            (br#"[5]"#, 0),
            (b"{\"x\":\"\xff\",\"revision\":4}", 4),
        ];
        for (raw, want) in cases {
            assert_eq!(
                record_revision(raw),
                want,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn a_record_past_2_52_is_refused_and_2_52_loads() {
        let text = |revision: u64| {
            let mut r = crate::model::test_binding("acme", 1, &[]).to_record();
            r.revision = revision;
            serde_json::to_string(&r).unwrap()
        };
        assert_eq!(
            parse_json_record(&text(MAX_REVISION)).map(|b| b.revision.get()),
            Ok(MAX_REVISION)
        );
        for past in [MAX_REVISION + 1, 1 << 60, u64::MAX] {
            let e = parse_json_record(&text(past)).unwrap_err();
            assert!(e.contains("past 2^52"), "{e}");
        }
    }

    #[test]
    fn a_counter_of_another_type_is_set_right_not_deleted() {
        let said = |detail: &str| {
            let e = redis::make_extension_error("KEYTYPE".to_owned(), Some(detail.to_owned()));
            wrong_type(&e, "so nothing was written")
                .unwrap()
                .to_string()
        };
        let counter = said("nexus:revision text string");
        assert!(
            counter.contains("set it to the highest revision written"),
            "{counter}"
        );
        assert!(!counter.contains("delete it"), "{counter}");
        let feed = said("nexus:changes string stream");
        assert!(feed.contains("rename or delete it"), "{feed}");
    }

    #[test]
    fn script_errors_are_read_by_code() {
        let two = redis::make_extension_error("CONFLICT".to_owned(), Some("7".to_owned()));
        assert_eq!(script_error(&two), Some(("CONFLICT", "7")));
        // Redis turns a one-word error into `ERR <word>`.
        let one = RedisError::from((ErrorKind::ResponseError, "server", "NOTFOUND".to_owned()));
        assert_eq!(script_error(&one), Some(("NOTFOUND", "")));
        // The key goes up to the last two words, whatever the prefix holds.
        let keytype = redis::make_extension_error(
            "KEYTYPE".to_owned(),
            Some("my CONFLICT prefix:audit:acme string list".to_owned()),
        );
        match wrong_type(&keytype, "so it stopped") {
            Some(AdminError::WrongType {
                key,
                found,
                expected,
                ..
            }) => assert_eq!(
                (key.as_str(), found.as_str(), expected.as_str()),
                ("my CONFLICT prefix:audit:acme", "string", "list")
            ),
            other => panic!("{other:?}"),
        }
        assert!(wrong_type(&two, "so it stopped").is_none());
    }
}
