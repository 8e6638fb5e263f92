//! `assert`: fails unless every condition holds.

use async_trait::async_trait;
use engine::{Applied, Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;
use serde_json::json;

pub struct Assert;

/// One condition or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum That {
    One(bool),
    All(Vec<bool>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The condition, or a list of conditions that must all be true. Write them as expressions in
    /// the playbook; they are evaluated before the module runs.
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
| `that` | bool or list of bools | the conditions |
| `fail_msg` (or `msg`) | string | the error when one is false |
| `success_msg` | string | the message when all hold |

## Example

```rhai
assert(#{ that: [masters.len() % 2 == 1, cfg.pod_cidr != ""], fail_msg: "need an odd number of masters" })
```
"#;

#[async_trait]
impl Module for Assert {
    const NAME: &'static str = "assert";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = ();

    async fn probe(&self, args: &Args, _: &ModuleContext<'_>) -> Result<Probe<()>, ModuleError> {
        let all = match &args.that {
            That::One(b) => vec![*b],
            That::All(v) => v.clone(),
        };
        if let Some(i) = all.iter().position(|ok| !ok) {
            return Err(ModuleError::Failed(match &args.fail_msg {
                Some(m) => m.clone(),
                None if all.len() > 1 => {
                    format!(
                        "Assertion failed (condition {} of {} is false)",
                        i + 1,
                        all.len()
                    )
                }
                None => "Assertion failed".into(),
            }));
        }
        let msg = args
            .success_msg
            .as_deref()
            .unwrap_or("All assertions passed");
        Ok(Probe::Unchanged(json!({ "msg": msg })))
    }

    async fn apply(&self, _: &Args, _: (), _: &ModuleContext<'_>) -> Result<Applied, ModuleError> {
        unreachable!("assert never reports a change")
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
        let err = env.error(&Assert, json!({ "that": "x == 1" })).await;
        assert!(err.contains("that"), "{err}");
    }
}
