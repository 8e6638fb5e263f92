//! `set_fact`: sets variables for later tasks on the same host.

use crate::NoChange;
use async_trait::async_trait;
use engine::{Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{Map, Value};

pub struct SetFact;

/// Free-form: every key is a fact name and its value the fact's value. (The map is taken as a
/// whole, so this module lists no fixed argument names.)
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct Args(pub Map<String, Value>);

pub const DOC: &str = r#"# set_fact

Sets facts for the host: later tasks on it see them as variables. The arguments are free-form:
every key is a fact name, every value its value (any type). Never reports a change, as in Ansible;
runs in check mode too.

## Example

```rhai
set_fact(#{ control_plane_endpoint: "10.0.0.10:6443", join_token: result.stdout })
```
"#;

#[async_trait]
impl Module for SetFact {
    const NAME: &'static str = "set_fact";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = NoChange;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.0.is_empty() {
            return Err("set_fact needs at least one name: value".into());
        }
        match args.0.keys().find(|k| !crate::shared::names::is_var_name(k)) {
            Some(k) => Err(format!("{k:?} is not a valid fact name")),
            None => Ok(()),
        }
    }

    async fn probe(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<NoChange>, ModuleError> {
        let mut facts = cx.facts.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in &args.0 {
            facts.insert(k.clone(), v.clone());
        }
        Ok(Probe::Unchanged(Value::Object(args.0.clone())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::Status;
    use serde_json::json;

    #[tokio::test]
    async fn sets_facts_in_check_mode_too() {
        let env = Env::new();
        let out = env
            .apply(&SetFact, json!({ "a": 1, "b": { "c": [true] } }))
            .await;
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.result, json!({ "a": 1, "b": { "c": [true] } }));
        assert_eq!(env.check(&SetFact, json!({ "a": 2 })).await, Status::Ok);
        let facts = env.facts.lock().unwrap().clone();
        assert_eq!(
            Value::Object(facts),
            json!({ "a": 2, "b": { "c": [true] } })
        );
        assert!(env
            .error(&SetFact, json!({}))
            .await
            .contains("at least one"));
        assert!(env
            .error(&SetFact, json!({ "a-b": 1 }))
            .await
            .contains("\"a-b\""));
        assert!(env.error(&SetFact, json!([1])).await.contains("map"));
    }
}
