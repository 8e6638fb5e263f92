//! `debug`: shows a message or a variable.

use crate::NoChange;
use async_trait::async_trait;
use engine::{Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::{json, Value};

pub struct Debug;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// What to show: any value (string, number, list, map). Default "Hello world!".
    pub msg: Option<Value>,
    /// The name of a variable or fact to show instead; `a.b.0` reaches into maps and lists.
    pub var: Option<String>,
}

pub const DOC: &str = r#"# debug

Shows a message or the value of a variable. Never changes anything; runs in check mode too.
With a map of arguments, `debug(#{ .. })` is this module, run on each host; `debug(value)`
without a map is Rhai's own, which prints while the playbook is planned.
An undefined `var` shows `VARIABLE IS NOT DEFINED!` rather than failing, as in Ansible.

## Arguments

| name | type | |
|---|---|---|
| `msg` | any | the value to show (default "Hello world!") |
| `var` | string | a variable or fact name to show instead (`a.b.0` reaches inside) |

## Result

`msg`: the value shown (and `var`: the name, when given).

## Example

```rhai
debug(#{ msg: "installing on {{ inventory_hostname }}" })
debug(#{ var: "tok.stdout" })
```
"#;

/// Looks `name` up in the host's facts, then its variables; dots reach into maps and lists.
fn lookup(name: &str, cx: &ModuleContext<'_>) -> Option<Value> {
    let mut parts = name.split('.');
    let first = parts.next()?;
    let facts = cx.facts.lock().unwrap_or_else(|e| e.into_inner());
    let mut value = facts.get(first).or_else(|| cx.vars.get(first))?.clone();
    drop(facts);
    for part in parts {
        value = match &value {
            Value::Object(m) => m.get(part)?.clone(),
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?.clone(),
            _ => return None,
        };
    }
    Some(value)
}

#[async_trait]
impl Module for Debug {
    const NAME: &'static str = "debug";
    const SHOWS_MSG: bool = true;
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = NoChange;

    fn check_args(args: &Args) -> Result<(), String> {
        if args.msg.is_some() && args.var.is_some() {
            return Err("give either msg or var, not both".into());
        }
        Ok(())
    }

    async fn probe(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<NoChange>, ModuleError> {
        Ok(Probe::Unchanged(match &args.var {
            Some(name) => json!({
                "var": name,
                "msg": lookup(name, cx).unwrap_or_else(|| json!("VARIABLE IS NOT DEFINED!")),
            }),
            None => json!({ "msg": args.msg.clone().unwrap_or_else(|| json!("Hello world!")) }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::Status;

    #[tokio::test]
    async fn shows_messages_and_variables() {
        let mut env = Env::new();
        env.vars
            .insert("cluster".into(), json!({ "nodes": ["a", "b"] }));
        env.facts
            .lock()
            .unwrap()
            .insert("cluster".into(), json!({ "nodes": ["c"] }));
        let out = env.apply(&Debug, json!({ "msg": { "k": [1, 2] } })).await;
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.result, json!({ "msg": { "k": [1, 2] } }));
        let out = env.apply(&Debug, json!({ "var": "cluster.nodes.0" })).await;
        assert_eq!(out.result["msg"], "c", "facts come before vars");
        let out = env.apply(&Debug, json!({ "var": "nope" })).await;
        assert_eq!(out.result["msg"], "VARIABLE IS NOT DEFINED!");
        let out = env.apply(&Debug, json!({})).await;
        assert_eq!(out.result["msg"], "Hello world!");
        assert_eq!(env.check(&Debug, json!({ "msg": "x" })).await, Status::Ok);
        let err = env.error(&Debug, json!({ "mgs": "x" })).await;
        assert!(err.contains("unknown field `mgs`"), "{err}");
    }
}
