//! `fail`: stops the host with a message.

use crate::NoChange;
use async_trait::async_trait;
use engine::{Module, ModuleContext, ModuleError, Probe};
use serde::Deserialize;

pub struct Fail;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The error message (default "Failed as requested from task").
    pub msg: Option<String>,
}

pub const DOC: &str = r#"# fail

Always fails, with `msg`. Use it behind a condition to stop a host early; it fails in check mode
too.

## Arguments

| name | type | |
|---|---|---|
| `msg` | string | the error (default "Failed as requested from task") |

## Example

```rhai
fail(#{ msg: "unsupported distribution" })
```
"#;

#[async_trait]
impl Module for Fail {
    const NAME: &'static str = "fail";
    const DOC: &'static str = DOC;
    type Args = Args;
    type Plan = NoChange;

    async fn probe(
        &self,
        args: &Args,
        _: &ModuleContext<'_>,
    ) -> Result<Probe<NoChange>, ModuleError> {
        Err(ModuleError::Failed(
            args.msg
                .clone()
                .unwrap_or_else(|| "Failed as requested from task".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;
    use serde_json::json;

    #[tokio::test]
    async fn always_fails() {
        let env = Env::new();
        assert_eq!(env.error(&Fail, json!({ "msg": "stop" })).await, "stop");
        assert_eq!(
            env.error(&Fail, json!({})).await,
            "Failed as requested from task"
        );
        assert!(
            env.run(&Fail, json!({}), true).await.is_err(),
            "check mode too"
        );
    }
}
