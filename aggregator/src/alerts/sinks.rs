//! Where alerts go, and in which message format: a generic JSON webhook, and
//! the WeCom (企业微信) and DingTalk group robots in their own formats.

use super::Event;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One alert destination.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sink {
    /// POST the event as JSON.
    Webhook {
        /// Receiver URL.
        url: String,
    },
    /// WeCom group robot (`https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…`), markdown message.
    Wecom {
        /// Robot URL with its key.
        url: String,
    },
    /// DingTalk group robot (`https://oapi.dingtalk.com/robot/send?access_token=…`), markdown message.
    Dingtalk {
        /// Robot URL with its token.
        url: String,
    },
}

impl Sink {
    /// Where to POST.
    pub fn url(&self) -> &str {
        match self {
            Sink::Webhook { url } | Sink::Wecom { url } | Sink::Dingtalk { url } => url,
        }
    }

    /// The request body for an event.
    pub fn body(&self, e: &Event) -> Value {
        let title = e.title();
        let text = format!(
            "### {title}\n> 对象 subject: {} ({})\n> 规则 rule: {}\n> 数值 value: {:.4} / 限值 limit: {}\n> 期间 period: {}\n> {}\n> 时间 time: {}",
            e.subject.name,
            e.subject.enterprise.as_deref().unwrap_or(&e.subject.zone),
            e.rule,
            e.value,
            e.limit,
            e.period,
            e.detail,
            e.at.with_timezone(&zonesync_proto::CST).format("%Y-%m-%d %H:%M:%S (UTC+8)")
        );
        match self {
            Sink::Webhook { .. } => serde_json::to_value(e).unwrap_or(Value::Null),
            Sink::Wecom { .. } => json!({ "msgtype": "markdown", "markdown": { "content": text } }),
            Sink::Dingtalk { .. } => json!({ "msgtype": "markdown", "markdown": { "title": title, "text": text } }),
        }
    }
}
