//! The field names of a serde struct, read from its Deserialize impl, so each module's list of
//! accepted arguments has one source: its Args struct.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::de::{self, Deserialize, Deserializer, Visitor};

#[derive(Debug)]
struct Found(&'static [&'static str]);

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields found")
    }
}
impl std::error::Error for Found {}
impl de::Error for Found {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Found(&[])
    }
}

struct FieldProbe;

impl<'de> Deserializer<'de> for FieldProbe {
    type Error = Found;
    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Found> {
        Err(Found(&[]))
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Found> {
        Err(Found(fields))
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The fields of struct `T` (empty for anything that is not a plain struct).
pub fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    static CACHE: Mutex<Option<HashMap<&'static str, &'static [&'static str]>>> = Mutex::new(None);
    let key = std::any::type_name::<T>();
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    map.entry(key)
        .or_insert_with(|| match T::deserialize(FieldProbe) {
            Err(Found(fields)) => fields,
            Ok(_) => &[],
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Args {
        dest: String,
        mode: Option<String>,
    }

    #[test]
    fn lists_fields_of_a_struct() {
        assert_eq!(struct_fields::<Args>(), &["dest", "mode"]);
    }
}
