use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prost::Message;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use users_proto::v1 as pb;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn reflection_v1_lists_every_service_and_describes_ours_with_its_imports() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel().await);
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("users.v1.UserService".into()),
        // grpcurl asks for each import by name next.
        MessageRequest::FileByFilename("google/protobuf/field_mask.proto".into()),
    ]
    .map(|m| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(m),
    });

    let mut responses = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    let Some(MessageResponse::FileDescriptorResponse(import)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected the imported file");
    };

    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "users.v1.UserService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    let files: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            prost_types::FileDescriptorProto::decode(bytes.as_slice())
                .unwrap()
                .name()
                .to_owned()
        })
        .collect();
    assert!(
        files.iter().any(|f| f == "users/v1/users.proto"),
        "{files:?}"
    );
    let import =
        prost_types::FileDescriptorProto::decode(import.file_descriptor_proto[0].as_slice())
            .unwrap();
    assert_eq!(import.name(), "google/protobuf/field_mask.proto");
}

#[tokio::test]
async fn reflection_v1alpha_lists_our_service_too() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "users.v1.UserService")
    );
}

#[tokio::test]
async fn health_reports_the_server_and_the_user_service_as_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);

    for service in ["", "users.v1.UserService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.v1.Nothing".into(),
        })
        .await;
    assert_eq!(unknown.unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn health_turns_not_serving_when_shutdown_starts() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "users.v1.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let stopping = tokio::spawn(app.stop());
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message()).await;

    assert_eq!(
        next.unwrap().unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    // An open health watch would hold the drain until the grace period ends.
    drop(watch);
    stopping.await.unwrap();
}

/// A gRPC-Web request body: one uncompressed data frame.
fn grpc_web_frame(message: &impl Message) -> Bytes {
    let payload = message.encode_to_vec();
    let mut frame = BytesMut::with_capacity(5 + payload.len());
    frame.put_u8(0);
    frame.put_u32(payload.len() as u32);
    frame.put_slice(&payload);
    frame.freeze()
}

#[tokio::test]
async fn a_grpc_web_call_over_http_1_1_gets_the_user_and_a_trailer_frame() {
    let app = spawn_app().await;
    let created = app.create("Ada", "Lovelace").await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{}/users.v1.UserService/GetUser", app.addr))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(Full::new(grpc_web_frame(&pb::GetUserRequest {
            id: created.id,
        })))
        .unwrap();

    let response = client.request(request).await.unwrap();

    assert_eq!(response.version(), http::Version::HTTP_11);
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web"),
        "{:?}",
        response.headers()
    );
    let mut body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.get_u8(), 0, "first a data frame");
    let length = body.get_u32() as usize;
    let user = pb::User::decode(body.split_to(length)).unwrap();
    assert_eq!(user, created);
    assert_eq!(body.get_u8(), 0x80, "then a trailer frame");
    let length = body.get_u32() as usize;
    let trailers = String::from_utf8(body.split_to(length).to_vec()).unwrap();
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
}

#[tokio::test]
async fn a_grpc_web_preflight_from_an_allowed_origin_is_answered() {
    let app = spawn_app_with(|c| c.cors_allow_origins = vec!["https://ops.example".into()]).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let preflight = |origin: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(format!("http://{}/users.v1.UserService/GetUser", app.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };

    let allowed = client
        .request(preflight("https://ops.example"))
        .await
        .unwrap();
    let refused = client
        .request(preflight("https://evil.example"))
        .await
        .unwrap();

    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://ops.example"
    );
    let allowed_headers = allowed.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed_headers.contains("x-grpc-web"), "{allowed_headers}");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test]
async fn the_demo_seed_makes_user_1_once_and_only_on_a_new_database() {
    let app = spawn_app_with(|c| c.seed_demo_user = true).await;
    let seeded = app
        .client
        .clone()
        .get_user(pb::GetUserRequest { id: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seeded.first_name.as_deref(), Some("John"));
    let (dir, config) = (app.dir.clone(), app.config.clone());
    app.client
        .clone()
        .delete_user(pb::DeleteUserRequest {
            id: 1,
            expected_version: None,
        })
        .await
        .unwrap();
    app.stop().await;

    let again = crate::helpers::spawn_app_in(dir, config).await;
    let page = again
        .client
        .clone()
        .list_users(pb::ListUsersRequest::default())
        .await
        .unwrap();

    assert_eq!(
        page.into_inner().total_size,
        0,
        "a deliberate delete is not undone by a restart"
    );
}
