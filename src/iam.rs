//! The least-privilege IAM policies for chainwatch's instances, one per
//! role (one instance profile each), rendered for a fleet name: exactly the
//! EC2 actions the daemon uses, scoped by tag conditions:
//!
//! * an instance tags only itself (`aws:ARN` is its own
//!   `ec2:SourceInstanceARN`), and only with `chainwatch:id`,
//!   `chainwatch:state` and `chainwatch:epoch`;
//! * on the other instances of its fleet and role it may only set
//!   `chainwatch:state=fenced` (with `chainwatch:fenced-at`, which the
//!   fleet-wide fence budget counts) and stop them;
//! * `chainwatch:fleet` and `chainwatch:role` are denied outright except at
//!   `RunInstances` (whoever launches the instance sets them), so an
//!   instance cannot move itself out of its fleet or role;
//! * only frontends may move the Elastic IP;
//! * at boot, the instance fetches its role's PKI (and the broker
//!   password) from where `render-user-data --pki-source` says: SSM
//!   parameters or S3 objects under the prefix, decrypted by KMS only
//!   through that service; no other role's keys.

use serde_json::{Value, json};

use crate::layout::Role;
use crate::shell::aws::ec2::tags;

/// Every action chainwatch's daemon and `history` call, and the boot
/// script's fetch of the PKI (from SSM; from S3, `s3:GetObject` instead of
/// `ssm:GetParameter`).
pub const ACTIONS: [&str; 11] = [
    "ec2:DescribeInstances",
    "ec2:DescribeAddresses",
    "ec2:StopInstances",
    "ec2:CreateTags",
    "ec2:AssociateAddress",
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "logs:FilterLogEvents",
    "ssm:GetParameter",
    "kms:Decrypt",
];

/// The PKI source `render-user-data` and `iam-policy` assume by default.
pub const DEFAULT_PKI_SOURCE: &str = "ssm:/chainwatch/pki";

/// The files every node of a role fetches with its PKI, under the source's
/// prefix; its own common names' certificates and keys come beside them
/// (SSM: `<prefix>/<cn>.crt`; S3: `issued/<cn>.crt`, `private/<cn>.key`).
const SHARED_PKI: [&str; 4] = ["ca.crt", "ta.key", "members.key", "broker.password"];

/// The statements that let `role`'s instances fetch their PKI from `pki`
/// (`ssm:/prefix`, `s3://bucket/prefix/` or `baked`), or `None` for a
/// source this cannot scope (the caller refuses it).
fn pki_access(pki: &str, role: Role) -> Option<Vec<Value>> {
    let (action, resources, via) = if let Some(prefix) = pki.strip_prefix("ssm:") {
        let prefix = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || prefix.len() < 2 {
            return None;
        }
        let mut arns: Vec<String> = SHARED_PKI
            .iter()
            .map(|f| format!("arn:aws:ssm:*:*:parameter{prefix}/{f}"))
            .collect();
        arns.push(format!("arn:aws:ssm:*:*:parameter{prefix}/{role}*"));
        ("ssm:GetParameter", arns, "ssm.*.amazonaws.com")
    } else if let Some(rest) = pki.strip_prefix("s3://") {
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() {
            return None;
        }
        let mut arns: Vec<String> = SHARED_PKI
            .iter()
            .map(|f| format!("arn:aws:s3:::{rest}/{f}"))
            .collect();
        arns.push(format!("arn:aws:s3:::{rest}/issued/{role}*"));
        arns.push(format!("arn:aws:s3:::{rest}/private/{role}*"));
        ("s3:GetObject", arns, "s3.*.amazonaws.com")
    } else if pki == "baked" {
        return Some(Vec::new());
    } else {
        return None;
    };
    Some(vec![
        json!({
            "Sid": "FetchThisRolesPki",
            "Effect": "Allow",
            "Action": action,
            "Resource": resources
        }),
        json!({
            "Sid": "DecryptThePkiOnlyThroughItsStore",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringLike": {"kms:ViaService": via}}
        }),
    ])
}

/// The policy document for the instances of `role` in `fleet`, writing
/// transitions to `log_group`, with the PKI at the default source.
pub fn policy(fleet: &str, log_group: &str, role: Role) -> Value {
    policy_with_pki(fleet, log_group, role, DEFAULT_PKI_SOURCE)
        .unwrap_or_else(|| unreachable!("the default PKI source is valid"))
}

/// The policy document for the instances of `role` in `fleet`, writing
/// transitions to `log_group`, fetching their PKI from `pki`; `None` when
/// `pki` is not `ssm:/prefix`, `s3://bucket/prefix/` or `baked`.
pub fn policy_with_pki(fleet: &str, log_group: &str, role: Role, pki: &str) -> Option<Value> {
    let group_arn = format!("arn:aws:logs:*:*:log-group:{log_group}");
    let fleet_tag = format!("aws:ResourceTag/{}", tags::FLEET);
    let role_tag = format!("aws:ResourceTag/{}", tags::ROLE);
    let instances = "arn:aws:ec2:*:*:instance/*";
    let mut statements = vec![
        json!({
            "Sid": "ReadTheFleet",
            "Effect": "Allow",
            "Action": ["ec2:DescribeInstances", "ec2:DescribeAddresses"],
            "Resource": "*"
        }),
        json!({
            "Sid": "FenceOnlyThisFleetAndRole",
            "Effect": "Allow",
            "Action": "ec2:StopInstances",
            "Resource": instances,
            "Condition": {"StringEquals": {fleet_tag.clone(): fleet, role_tag.clone(): role.as_str()}}
        }),
        json!({
            "Sid": "TagOnlyItself",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": instances,
            "Condition": {
                "StringEquals": {
                    "aws:ARN": "${ec2:SourceInstanceARN}",
                    fleet_tag.clone(): fleet,
                    role_tag.clone(): role.as_str()
                },
                "ForAllValues:StringEquals": {
                    "aws:TagKeys": [tags::ID, tags::STATE, tags::EPOCH]
                }
            }
        }),
        json!({
            "Sid": "MarkOthersFenced",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": instances,
            "Condition": {
                "StringEquals": {
                    fleet_tag.clone(): fleet,
                    role_tag.clone(): role.as_str(),
                    format!("aws:RequestTag/{}", tags::STATE): "fenced"
                },
                "ForAllValues:StringEquals": {"aws:TagKeys": [tags::STATE, tags::FENCED_AT]}
            }
        }),
        json!({
            "Sid": "FleetAndRoleOnlyAtLaunch",
            "Effect": "Deny",
            "Action": ["ec2:CreateTags", "ec2:DeleteTags"],
            "Resource": "*",
            "Condition": {
                "ForAnyValue:StringEquals": {"aws:TagKeys": [tags::FLEET, tags::ROLE]},
                "StringNotEquals": {"ec2:CreateAction": "RunInstances"}
            }
        }),
    ];
    if role == Role::Frontend {
        statements.push(json!({
            "Sid": "MoveTheElasticIpWithinThisFleet",
            "Effect": "Allow",
            "Action": "ec2:AssociateAddress",
            "Resource": [
                "arn:aws:ec2:*:*:elastic-ip/*",
                instances
            ],
            "Condition": {"StringEquals": {fleet_tag: fleet}}
        }));
    }
    statements.push(json!({
        "Sid": "WriteAndReadTransitions",
        "Effect": "Allow",
        "Action": [
            "logs:CreateLogGroup",
            "logs:CreateLogStream",
            "logs:PutLogEvents",
            "logs:FilterLogEvents"
        ],
        "Resource": [group_arn.clone(), format!("{group_arn}:log-stream:*")]
    }));
    statements.extend(pki_access(pki, role)?);
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

/// The file name of `role`'s policy under `iam/`.
pub fn file_name(role: Role) -> String {
    format!("chainwatch-{role}-policy.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement<'a>(p: &'a Value, sid: &str) -> &'a Value {
        p["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid} in {p}"))
    }

    fn actions(p: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for st in p["Statement"].as_array().unwrap() {
            if st["Effect"] != "Allow" {
                continue;
            }
            match &st["Action"] {
                Value::String(a) => out.push(a.clone()),
                Value::Array(a) => out.extend(a.iter().map(|v| v.as_str().unwrap().to_string())),
                _ => panic!("bad Action"),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn each_role_is_allowed_exactly_what_it_uses() {
        let mut all: Vec<String> = ACTIONS.iter().map(|s| s.to_string()).collect();
        all.sort();
        assert_eq!(actions(&policy("prod", "/cw", Role::Frontend)), all);
        let backend: Vec<String> = all
            .iter()
            .filter(|a| *a != "ec2:AssociateAddress")
            .cloned()
            .collect();
        assert_eq!(actions(&policy("prod", "/cw", Role::Backend)), backend);
    }

    #[test]
    fn an_instance_tags_only_itself_and_marks_only_its_peers_fenced() {
        for role in Role::ALL {
            let p = policy("prod", "/cw", role);
            // Both CreateTags statements: only this fleet and role, only
            // these keys; one only on itself, the other only `fenced`.
            for (sid, (key, value), keys) in [
                (
                    "TagOnlyItself",
                    ("aws:ARN", "${ec2:SourceInstanceARN}"),
                    json!(["chainwatch:id", "chainwatch:state", "chainwatch:epoch"]),
                ),
                (
                    "MarkOthersFenced",
                    ("aws:RequestTag/chainwatch:state", "fenced"),
                    json!(["chainwatch:state", "chainwatch:fenced-at"]),
                ),
            ] {
                let st = statement(&p, sid);
                assert_eq!(st["Action"], "ec2:CreateTags");
                let eq = &st["Condition"]["StringEquals"];
                assert_eq!(eq[key], value, "{sid}");
                assert_eq!(eq["aws:ResourceTag/chainwatch:fleet"], "prod");
                assert_eq!(eq["aws:ResourceTag/chainwatch:role"], role.as_str());
                assert_eq!(
                    st["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
                    keys
                );
            }
            let stop = statement(&p, "FenceOnlyThisFleetAndRole");
            assert_eq!(stop["Action"], "ec2:StopInstances");
            assert_eq!(
                stop["Condition"]["StringEquals"]["aws:ResourceTag/chainwatch:role"],
                role.as_str()
            );
            // Fleet and role: denied except at launch, whatever else allows.
            let deny = statement(&p, "FleetAndRoleOnlyAtLaunch");
            assert_eq!(deny["Effect"], "Deny");
            assert_eq!(
                deny["Condition"]["ForAnyValue:StringEquals"]["aws:TagKeys"],
                json!(["chainwatch:fleet", "chainwatch:role"])
            );
            assert_eq!(
                deny["Condition"]["StringNotEquals"]["ec2:CreateAction"],
                "RunInstances"
            );
            // No allow statement on EC2 writes without the fleet condition.
            for st in p["Statement"].as_array().unwrap() {
                let writes = st["Effect"] == "Allow"
                    && st["Action"].to_string().contains("ec2:")
                    && st["Sid"] != "ReadTheFleet";
                if writes {
                    assert_eq!(
                        st["Condition"]["StringEquals"]["aws:ResourceTag/chainwatch:fleet"], "prod",
                        "{st}"
                    );
                    assert_ne!(st["Resource"], "*", "{st}");
                }
            }
        }
        // Only frontends move the Elastic IP.
        let fe = policy("prod", "/cw", Role::Frontend);
        assert_eq!(
            statement(&fe, "MoveTheElasticIpWithinThisFleet")["Action"],
            "ec2:AssociateAddress"
        );
        let be = policy("prod", "/cw", Role::Backend);
        assert!(
            !be["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["Sid"] == "MoveTheElasticIpWithinThisFleet")
        );
    }

    #[test]
    fn each_role_fetches_only_its_own_pki_and_decrypts_only_through_the_store() {
        let ssm = policy("prod", "/cw", Role::Backend);
        let fetch = statement(&ssm, "FetchThisRolesPki");
        assert_eq!(fetch["Action"], "ssm:GetParameter");
        let res = fetch["Resource"].to_string();
        assert!(
            res.contains("arn:aws:ssm:*:*:parameter/chainwatch/pki/backend*"),
            "{res}"
        );
        assert!(
            res.contains("parameter/chainwatch/pki/broker.password"),
            "{res}"
        );
        assert!(!res.contains("frontend"), "{res}");
        let kms = statement(&ssm, "DecryptThePkiOnlyThroughItsStore");
        assert_eq!(
            kms["Condition"]["StringLike"]["kms:ViaService"],
            "ssm.*.amazonaws.com"
        );
        let s3 = policy_with_pki("prod", "/cw", Role::Frontend, "s3://pki-bucket/cw/").unwrap();
        let fetch = statement(&s3, "FetchThisRolesPki");
        assert_eq!(fetch["Action"], "s3:GetObject");
        let res = fetch["Resource"].to_string();
        assert!(
            res.contains("arn:aws:s3:::pki-bucket/cw/private/frontend*"),
            "{res}"
        );
        assert!(!res.contains("backend"), "{res}");
        assert_eq!(
            statement(&s3, "DecryptThePkiOnlyThroughItsStore")["Condition"]["StringLike"]["kms:ViaService"],
            "s3.*.amazonaws.com"
        );
        let baked = policy_with_pki("prod", "/cw", Role::Frontend, "baked").unwrap();
        assert!(!baked.to_string().contains("FetchThisRolesPki"));
        for bad in ["ssm:", "ssm:relative", "s3://", "ftp://x"] {
            assert!(
                policy_with_pki("prod", "/cw", Role::Frontend, bad).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_files_in_the_repository_are_the_default_renderings() {
        for (role, text) in [
            (
                Role::Frontend,
                include_str!("../iam/chainwatch-frontend-policy.json"),
            ),
            (
                Role::Backend,
                include_str!("../iam/chainwatch-backend-policy.json"),
            ),
        ] {
            let file: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                file,
                policy(
                    &crate::config::AwsConfig::default().fleet,
                    &crate::config::AnnounceConfig::default().cloudwatch_log_group,
                    role
                ),
                "iam/{}: regenerate with `chainwatch iam-policy --role {role}`",
                file_name(role)
            );
        }
    }
}
