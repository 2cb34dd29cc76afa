//! How the gateway calls the user-service: every RPC carries the gateway's service
//! token (when configured), the caller's identity (`x-user-sub`) and the id of the
//! HTTP request it serves (`x-request-id`), so the user-service can refuse anyone
//! but the gateway and log who asked, for which request.

pub mod replicas;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};
use users_proto::v1::user_service_client::UserServiceClient;

/// Metadata key of the caller's identity (the token's `sub`).
pub const SUB_HEADER: &str = "x-user-sub";
/// Longest `sub` forwarded; longer ones are cut (they only feed the logs).
const MAX_SUB_LEN: usize = 256;

/// The user-service client every part of the gateway uses.
pub type UsersClient = UserServiceClient<InterceptedService<Channel, Credentials>>;

/// What the gateway adds to each RPC: a bearer service token and the caller.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    service_token: Option<MetadataValue<Ascii>>,
    sub: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// The gateway's own credentials; `service_token` is sent as
    /// `authorization: Bearer <token>`.
    pub fn new(service_token: Option<&str>) -> anyhow::Result<Credentials> {
        let service_token = service_token
            .map(|token| {
                format!("Bearer {token}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| anyhow::anyhow!("the service token must be printable ASCII"))
            })
            .transpose()?;
        Ok(Credentials {
            service_token,
            sub: None,
        })
    }

    /// The same credentials, speaking for `sub` (`None`: an anonymous caller).
    pub fn for_caller(&self, sub: Option<&str>) -> Credentials {
        Credentials {
            service_token: self.service_token.clone(),
            sub: sub.and_then(|sub| escape(sub).parse().ok()),
        }
    }

    /// A client on `channel` that sends these credentials.
    pub fn client(&self, channel: Channel) -> UsersClient {
        UserServiceClient::with_interceptor(channel, self.clone())
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let metadata = request.metadata_mut();
        if let Some(token) = &self.service_token {
            metadata.insert("authorization", token.clone());
        }
        if let Some(sub) = &self.sub {
            metadata.insert(SUB_HEADER, sub.clone());
        }
        // Ids are checked to be plain ASCII tokens when they are made.
        if let Some(id) = crate::observe::request_id()
            && let Ok(id) = MetadataValue::try_from(&*id)
        {
            metadata.insert(service_runtime::request_id::HEADER, id);
        }
        if service_runtime::telemetry::exporting() {
            let mut headers = std::mem::take(request.metadata_mut()).into_headers();
            service_runtime::telemetry::propagate(&mut headers);
            *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        }
        Ok(request)
    }
}

/// `sub` as a printable-ASCII metadata value: other bytes are percent-encoded.
fn escape(sub: &str) -> String {
    let mut out = String::new();
    for byte in sub.bytes() {
        if out.len() >= MAX_SUB_LEN {
            break;
        }
        if (0x21..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_is_sent_as_printable_ascii() {
        assert_eq!(escape("alice"), "alice");
        assert_eq!(escape("zoë 1"), "zo%C3%AB%201");
        assert!(escape(&"x".repeat(1000)).len() <= MAX_SUB_LEN);
    }

    #[test]
    fn credentials_add_the_token_and_the_caller() {
        let mut credentials = Credentials::new(Some("s3cret"))
            .unwrap()
            .for_caller(Some("alice"));
        let request = credentials.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer s3cret"
        );
        assert_eq!(request.metadata().get(SUB_HEADER).unwrap(), "alice");
        let mut anonymous = Credentials::new(None).unwrap().for_caller(None);
        let request = anonymous.call(Request::new(())).unwrap();
        assert!(request.metadata().is_empty());
    }

    #[tokio::test]
    async fn calls_made_for_a_request_carry_its_id() {
        let mut credentials = Credentials::new(None).unwrap();
        let request = crate::observe::in_request("abc-123".into(), async {
            credentials.call(Request::new(())).unwrap()
        })
        .await;
        assert_eq!(request.metadata().get("x-request-id").unwrap(), "abc-123");
        let outside = credentials.call(Request::new(())).unwrap();
        assert!(outside.metadata().get("x-request-id").is_none());
    }
}
