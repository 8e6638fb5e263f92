//! `assert`: fails unless every condition holds.

use crate::NoChange;
use async_trait::async_trait;
use engine::{Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::json;

pub struct Assert;

/// A condition: a boolean, or an expression evaluated on the host as Ansible's `that:` is.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Condition {
    Bool(bool),
    Expr(String),
}

/// One condition or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum That {
    One(Condition),
    All(Vec<Condition>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The condition, or a list of conditions that must all be true: booleans computed in Rhai,
    /// or expressions in template syntax evaluated on the host (`"motd.stdout == 'hi'"`).
    pub that: That,
    /// The error when a condition is false (default "Assertion failed"). `msg` is accepted too.
    #[serde(alias = "msg")]
    pub fail_msg: Option<String>,
    /// The message when all hold (default "All assertions passed").
    pub success_msg: Option<String>,
}

pub const DOC: &str = r#"# assert

Fails the task unless every condition in `that` is true. Never changes anything; runs in check
mode too.

## Arguments

| name | type | |
|---|---|---|
| `that` | bool, expression, or a list of them | the conditions; expressions use template syntax without braces |
| `fail_msg` (or `msg`) | string | the error when one is false |
| `success_msg` | string | the message when all hold |

## Example

```rhai
assert(#{ that: [masters.len() % 2 == 1, "pod_cidr != ''"], fail_msg: "need an odd number of masters" })
```
"#;

#[async_trait]
impl Module for Assert {
    const NAME: &'static str = "assert";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = NoChange;

    async fn probe(
        &self,
        args: &Args,
        cx: &ModuleContext<'_>,
    ) -> Result<Probe<NoChange>, ModuleError> {
        let all = match &args.that {
            That::One(c) => vec![c.clone()],
            That::All(v) => v.clone(),
        };
        for (i, c) in all.iter().enumerate() {
            let holds = match c {
                Condition::Bool(b) => *b,
                Condition::Expr(e) => engine::template::is_truthy(&cx.templates.eval(e)?),
            };
            if holds {
                continue;
            }
            let what = match c {
                Condition::Expr(e) => format!(": {e}"),
                Condition::Bool(_) if all.len() > 1 => {
                    format!(" (condition {} of {} is false)", i + 1, all.len())
                }
                Condition::Bool(_) => String::new(),
            };
            return Err(ModuleError::Failed(match &args.fail_msg {
                Some(m) => m.clone(),
                None => format!("Assertion failed{what}"),
            }));
        }
        let msg = args
            .success_msg
            .as_deref()
            .unwrap_or("All assertions passed");
        Ok(Probe::Unchanged(json!({ "msg": msg })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use engine::module::Status;

    #[tokio::test]
    async fn passes_and_fails() {
        let env = Env::new();
        let out = env
            .apply(
                &Assert,
                json!({ "that": [true, true], "success_msg": "fine" }),
            )
            .await;
        assert_eq!(out.status, Status::Ok);
        assert_eq!(out.result["msg"], "fine");
        assert_eq!(
            env.check(&Assert, json!({ "that": true })).await,
            Status::Ok
        );
        let err = env.error(&Assert, json!({ "that": [true, false] })).await;
        assert_eq!(err, "Assertion failed (condition 2 of 2 is false)");
        let err = env
            .error(&Assert, json!({ "that": false, "msg": "odd masters" }))
            .await;
        assert_eq!(err, "odd masters");
    }

    #[tokio::test]
    async fn evaluates_expressions_with_the_host_variables() {
        let mut env = Env::new();
        env.vars.insert("x".into(), json!(1));
        let out = env
            .apply(&Assert, json!({ "that": ["x == 1", true] }))
            .await;
        assert_eq!(out.status, Status::Ok);
        let err = env
            .error(&Assert, json!({ "that": ["x == 1", "x == 2"] }))
            .await;
        assert_eq!(err, "Assertion failed: x == 2");
        let err = env.error(&Assert, json!({ "that": "y > 0" })).await;
        assert!(err.contains("undefined") && err.contains("'y'"), "{err}");
    }
}
