//! The WhatsApp Cloud API provider's settings (`kind = "whatsapp_cloud"`): Meta's Graph API,
//! sending authentication templates. See docs/providers.md.

use super::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsappSettings {
    /// The Graph API's origin; a test points it at a fake.
    pub base_url: String,
    /// The Graph API version in the path, e.g. `v21.0`.
    pub api_version: String,
    /// The business phone number's id (digits), from the WhatsApp Manager.
    pub phone_number_id: String,
    /// A system user's access token with `whatsapp_business_messaging`, sent as a bearer token.
    pub access_token: Secret,
    /// The Meta app's secret: webhook posts are signed with it (`X-Hub-Signature-256`).
    pub app_secret: Secret,
    /// What the webhook's verification handshake must present as `hub.verify_token`.
    pub verify_token: Secret,
    /// Locale → the approved authentication template to send for it. A job's locale is
    /// looked up along its fallback chain (`pt-br`, `pt`, then `app.default_locale`).
    pub templates: BTreeMap<String, WhatsappTemplate>,
    pub timeout_ms: u64,
    pub max_concurrency: u32,
    pub max_per_second: u32,
}

/// One approved authentication template: its name and its language as Meta spells it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    pub name: String,
    /// Meta's language code of the template, e.g. `en_US`, `pt_BR`, `de`.
    pub language: String,
}

impl Default for WhatsappSettings {
    fn default() -> Self {
        WhatsappSettings {
            base_url: "https://graph.facebook.com".into(),
            api_version: "v21.0".into(),
            phone_number_id: String::new(),
            access_token: Secret::default(),
            app_secret: Secret::default(),
            verify_token: Secret::default(),
            templates: BTreeMap::new(),
            timeout_ms: 10_000,
            max_concurrency: 32,
            // Meta's default throughput for a business number is 80 messages per second.
            max_per_second: 80,
        }
    }
}
