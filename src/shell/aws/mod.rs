//! Amazon Web Services: EC2 (the registry and the fence) and CloudWatch Logs
//! (the transition log).

pub mod budget;
pub mod cloudwatch;
pub mod ec2;

/// The longest a client waits for a TCP and TLS connection to an AWS
/// endpoint (or less, when its call's own timeout is shorter).
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The SDK's shared configuration, loaded once per process and region: the
/// credentials chain with its cache, the region, and one HTTPS client. The
/// EC2 and CloudWatch Logs clients of a daemon share it, so that they
/// share one connection pool and one TLS configuration (with its parsed
/// trust roots) instead of building each its own. Each client sets its
/// call timeouts on top; with the same connect timeout they share one
/// connector.
pub async fn sdk_config(region: Option<&str>) -> aws_config::SdkConfig {
    static LOADED: tokio::sync::Mutex<Option<(Option<String>, aws_config::SdkConfig)>> =
        tokio::sync::Mutex::const_new(None);
    let mut loaded = LOADED.lock().await;
    if let Some((r, c)) = loaded.as_ref()
        && r.as_deref() == region
    {
        return c.clone();
    }
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(https)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        );
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    let c = loader.load().await;
    *loaded = Some((region.map(str::to_string), c.clone()));
    c
}
