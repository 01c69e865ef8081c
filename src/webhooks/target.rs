//! Where a webhook may be sent. A subscription names a URL; the fleet sends to it from
//! inside its own network, so a URL that points at a private, loopback or link-local
//! address (a database, a cloud metadata service, the fleet's own API) is refused unless
//! `webhooks.allow_private` is set. The literal is checked when subscribing and again before
//! each attempt; a host name is checked at each attempt by the resolver the delivery client
//! uses (`PublicResolver`), which hands the client only the public addresses it resolved, so
//! the checked address is the one connected to (no second lookup to rebind).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;

/// The longest URL a subscription may name.
const MAX_URL_BYTES: usize = 2048;

/// `text` as a webhook target: an absolute `http` or `https` URL of at most 2048 bytes,
/// without a user or password, whose host is not a private address (nor `localhost`)
/// unless `allow_private`. The error says why, for the field `url`.
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("url is longer than {MAX_URL_BYTES} bytes"));
    }
    let url = Url::parse(text).map_err(|e| format!("url is not a valid absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "url must be http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry a user or password (put a token in the path or query, or verify the signature)".into());
    }
    let Some(host) = url.host_str() else {
        return Err("url has no host".into());
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let private = match bare.parse::<IpAddr>() {
        Ok(ip) => is_private(ip),
        Err(_) => {
            let name = bare.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    };
    if private && !allow_private {
        return Err(format!(
            "url points at a private, loopback or link-local address ({host}); set \
             webhooks.allow_private = true to allow it"
        ));
    }
    Ok(url)
}

/// Whether an address is one a fleet must not be made to call: loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast, multicast, documentation or
/// reserved ranges, and IPv6 forms that embed such an IPv4 address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_private_v4(Ipv4Addr::new(a, b, c, d));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated) ::a.b.c.d
        }
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

/// The delivery client's resolver when private targets are refused: it resolves as the
/// system does and keeps only the public addresses; a name with none fails the attempt,
/// naming the setting.
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|a| !is_private(a.ip()))
                .collect();
            if public.is_empty() {
                let refused: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no public address (webhooks.allow_private is false)"
                )
                .into();
                return Err(refused);
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a00:1]/",
            "http://localhost:9000/",
            "http://api.localhost/",
        ] {
            let err = check_url(url, false).unwrap_err();
            assert!(err.contains("webhooks.allow_private"), "{url}: {err}");
            assert!(check_url(url, true).is_ok(), "{url} with allow_private");
        }
        for url in [
            "https://example.com/hooks?token=abc",
            "http://93.184.216.34/",
            "http://[2606:4700::1111]/",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
    }

    #[test]
    fn only_plain_http_urls_without_credentials_are_targets() {
        for (url, why) in [
            ("ftp://example.com/", "http:// or https://"),
            ("example.com/hook", "valid absolute URL"),
            ("https://user:pw@example.com/", "user or password"),
            ("file:///etc/passwd", "http:// or https://"),
        ] {
            let err = check_url(url, true).unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(check_url(&long, true).unwrap_err().contains("longer"));
    }

    #[tokio::test]
    async fn the_resolver_keeps_only_public_addresses() {
        use reqwest::dns::Resolve;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match PublicResolver.resolve(name).await {
            Ok(_) => panic!("localhost resolved to a public address"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("no public address"), "{err}");
    }
}
