//! Where alerts go, and in which message format: a generic JSON webhook, and
//! the WeCom (企业微信) and DingTalk group robots in their own formats.

use super::Event;
use crate::outbound::Destination;
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
    /// The zone's MQTT alert topic, `zonesync/v1/{zone}/alerts` (the event as JSON).
    Mqtt,
}

impl Sink {
    /// Where an event about `zone` goes.
    pub fn destination(&self, zone: &str) -> Destination {
        match self {
            Sink::Webhook { url } | Sink::Wecom { url } | Sink::Dingtalk { url } => {
                Destination::Http { url: url.clone() }
            }
            Sink::Mqtt => Destination::Mqtt {
                topic: format!("{}/{zone}/alerts", zonesync_proto::topic::ROOT),
                retain: false,
            },
        }
    }

    /// The request body for an event.
    pub fn body(&self, e: &Event) -> Value {
        let title = e.title();
        let text = format!(
            "### {title}\n> 对象 subject: {} ({})\n> 规则 rule: {}\n> 数值 value: {:.4} / 限值 limit: {}\n> 期间 period: {}\n> {}\n> 时间 time: {}",
            e.obs.subject.name,
            e.obs.subject.enterprise.as_deref().unwrap_or(&e.obs.subject.zone),
            e.obs.rule,
            e.obs.value,
            e.obs.limit,
            e.obs.period,
            e.obs.detail,
            e.at.with_timezone(&zonesync_proto::CST).format("%Y-%m-%d %H:%M:%S (UTC+8)")
        );
        match self {
            Sink::Webhook { .. } | Sink::Mqtt => serde_json::to_value(e).unwrap_or(Value::Null),
            Sink::Wecom { .. } => json!({ "msgtype": "markdown", "markdown": { "content": text } }),
            Sink::Dingtalk { .. } => json!({ "msgtype": "markdown", "markdown": { "title": title, "text": text } }),
        }
    }
}
