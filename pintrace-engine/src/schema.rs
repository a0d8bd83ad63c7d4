//! The version of every JSON object pintrace and its engine write, and the
//! object a command writes where its JSON goes when it cannot run (exit 2).
//! It lives in the engine, the crate both the agent and the engine's own
//! report share, so there is one number to bump.

use serde::Serialize;

/// The schema of pintrace's JSON: a consumer checks `"schema"` and refuses
/// a version it does not know. Bump it when a field is renamed, removed or
/// changes meaning (new fields do not bump it).
pub const SCHEMA: u32 = 1;

/// `value` with `"schema": SCHEMA` first among its fields. `value` must
/// serialise as a JSON object (a struct or a map).
#[derive(Serialize)]
pub struct Versioned<'a, T: ?Sized + Serialize> {
    schema: u32,
    #[serde(flatten)]
    value: &'a T,
}

pub fn versioned<T: ?Sized + Serialize>(value: &T) -> Versioned<'_, T> {
    Versioned {
        schema: SCHEMA,
        value,
    }
}

/// `{"type": "error", "command": ..., "message": ..., "code": 2}`: what a
/// command that writes JSON writes there when it cannot run, so a reader
/// of the JSON alone sees why it got no report.
#[derive(Serialize)]
pub struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    command: &'a str,
    message: &'a str,
    code: u8,
}

impl<'a> ErrorObject<'a> {
    pub fn new(command: &'a str, message: &'a str) -> ErrorObject<'a> {
        ErrorObject {
            kind: "error",
            command,
            message,
            code: 2,
        }
    }

    /// One line of JSON, with the schema.
    pub fn to_line(&self) -> String {
        serde_json::to_string(&versioned(self)).expect("an error object serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_comes_first_and_the_fields_follow_in_order() {
        #[derive(Serialize)]
        struct S {
            #[serde(rename = "type")]
            kind: &'static str,
            n: u32,
        }
        let s = serde_json::to_string(&versioned(&S { kind: "x", n: 3 })).unwrap();
        assert_eq!(s, r#"{"schema":1,"type":"x","n":3}"#);
        let v = serde_json::json!({"type": "exit", "tgid": 5});
        let s = serde_json::to_string(&versioned(&v)).unwrap();
        assert_eq!(s, r#"{"schema":1,"tgid":5,"type":"exit"}"#);
        assert_eq!(
            ErrorObject::new("run", "no \"kprobes\"").to_line(),
            r#"{"schema":1,"type":"error","command":"run","message":"no \"kprobes\"","code":2}"#
        );
    }
}
