//! Request parameters. Optional fields are left out of the body when unset,
//! because the server refuses unknown fields but accepts missing optional
//! ones.

use std::fmt;

use serde::Serialize;

/// `POST /v1/customers`. An empty `email` or `name` is left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CustomerParams {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// `POST /v1/payment_methods`. Deliberately without a derived `Debug`: its
/// `Debug` shows neither the number nor the CVC.
#[derive(Clone, Default)]
pub struct CardParams {
    pub number: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub cvc: String,
    /// Needed with the admin secret; an orchestrator's own customer otherwise.
    pub customer: Option<String>,
}

impl fmt::Debug for CardParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardParams")
            .field("number", &"[redacted]")
            .field("exp_month", &self.exp_month)
            .field("exp_year", &self.exp_year)
            .field("cvc", &"[redacted]")
            .field("customer", &self.customer)
            .finish()
    }
}

#[derive(Serialize)]
pub(crate) struct CardBody<'a> {
    card: CardInner<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer: Option<&'a str>,
}

#[derive(Serialize)]
struct CardInner<'a> {
    number: &'a str,
    exp_month: i64,
    exp_year: i64,
    cvc: &'a str,
}

impl CardParams {
    pub(crate) fn body(&self) -> CardBody<'_> {
        CardBody {
            card: CardInner {
                number: &self.number,
                exp_month: self.exp_month,
                exp_year: self.exp_year,
                cvc: &self.cvc,
            },
            customer: self.customer.as_deref(),
        }
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenParams {
    pub payment_method: String,
    pub provider: String,
    pub currency: String,
    /// The cap in the currency's minor unit.
    pub cap_amount: i64,
    /// `day`, `week`, `month`, `year` or `none`.
    pub period: String,
    /// `multi_use` (the server's default) or `single_use`.
    pub usage: Option<String>,
    pub max_per_charge: Option<i64>,
    pub expires_at: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct TokenBody<'a> {
    payment_method: &'a str,
    provider: &'a str,
    currency: &'a str,
    cap: CapBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_charge: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

#[derive(Serialize)]
struct CapBody<'a> {
    amount: i64,
    period: &'a str,
}

impl TokenParams {
    pub(crate) fn body(&self) -> TokenBody<'_> {
        TokenBody {
            payment_method: &self.payment_method,
            provider: &self.provider,
            currency: &self.currency,
            cap: CapBody {
                amount: self.cap_amount,
                period: &self.period,
            },
            usage: self.usage.as_deref(),
            max_per_charge: self.max_per_charge,
            expires_at: self.expires_at,
        }
    }
}

/// `POST /v1/tokens/self/derive` (the parent token as the bearer secret):
/// a narrower child. Left out, `usage`, `max_per_charge` and `expires_at`
/// are the parent's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeriveParams {
    /// The child's cap in the currency's minor unit (at most the parent's).
    pub cap_amount: i64,
    /// `day`, `week`, `month`, `year` or `none`.
    pub period: String,
    pub usage: Option<String>,
    pub max_per_charge: Option<i64>,
    pub expires_at: Option<i64>,
}

#[derive(Serialize)]
pub(crate) struct DeriveBody<'a> {
    cap: CapBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_per_charge: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
}

impl DeriveParams {
    pub(crate) fn body(&self) -> DeriveBody<'_> {
        DeriveBody {
            cap: CapBody {
                amount: self.cap_amount,
                period: &self.period,
            },
            usage: self.usage.as_deref(),
            max_per_charge: self.max_per_charge,
            expires_at: self.expires_at,
        }
    }
}

/// `POST /v1/charges` (provider).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChargeParams {
    /// The `scrip_pt_…` token the agent handed over.
    pub token: String,
    pub amount: i64,
    pub currency: String,
    /// `false` places an authorization hold to capture later.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `GET /v1/events` filters and paging; unset fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventListParams {
    /// Only events of this type (`charge.succeeded`, …).
    pub kind: Option<String>,
    /// Only events created at or after this Unix time.
    pub created_gte: Option<i64>,
    /// Only events created before this Unix time.
    pub created_lt: Option<i64>,
    /// 1 to 100 (the server's default is 10).
    pub limit: Option<u32>,
    /// An event id: the page continues with older events than this one.
    pub starting_after: Option<String>,
}

/// `POST /v1/webhook_endpoints`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookEndpointParams {
    pub url: String,
    /// Event types, or `["*"]` for all.
    pub enabled_events: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `POST /v1/webhook_endpoints/{id}`: only the fields that are set change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WebhookEndpointUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled_events: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn card_debug_never_shows_the_number_or_cvc() {
        let card = CardParams {
            number: "4242424242424242".into(),
            exp_month: 12,
            exp_year: 2030,
            cvc: "123".into(),
            customer: None,
        };
        let shown = format!("{card:?}");
        assert!(!shown.contains("4242"));
        assert!(!shown.contains("123"));
        let body = serde_json::to_value(card.body()).unwrap_or_default();
        assert_eq!(
            body,
            json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}})
        );
    }

    #[test]
    fn optional_fields_are_omitted() {
        let t = TokenParams {
            payment_method: "pm_1".into(),
            provider: "prov_1".into(),
            currency: "usd".into(),
            cap_amount: 10_000,
            period: "month".into(),
            ..TokenParams::default()
        };
        assert_eq!(
            serde_json::to_value(t.body()).unwrap_or_default(),
            json!({"payment_method": "pm_1", "provider": "prov_1", "currency": "usd",
                   "cap": {"amount": 10000, "period": "month"}})
        );
        let c = ChargeParams {
            token: "scrip_pt_x".into(),
            amount: 1,
            currency: "usd".into(),
            ..ChargeParams::default()
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap_or_default(),
            json!({"token": "scrip_pt_x", "amount": 1, "currency": "usd"})
        );
        let customer = CustomerParams {
            email: String::new(),
            name: "Ada".into(),
        };
        assert_eq!(
            serde_json::to_value(&customer).unwrap_or_default(),
            json!({"name": "Ada"})
        );
    }
}
