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
//! * only frontends may move the Elastic IP.

use serde_json::{Value, json};

use crate::layout::Role;
use crate::shell::aws::ec2::tags;

/// Every action chainwatch's daemon and `history` call.
pub const ACTIONS: [&str; 9] = [
    "ec2:DescribeInstances",
    "ec2:DescribeAddresses",
    "ec2:StopInstances",
    "ec2:CreateTags",
    "ec2:AssociateAddress",
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:PutLogEvents",
    "logs:FilterLogEvents",
];

/// The policy document for the instances of `role` in `fleet`, writing
/// transitions to `log_group`.
pub fn policy(fleet: &str, log_group: &str, role: Role) -> Value {
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
    json!({"Version": "2012-10-17", "Statement": statements})
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
                    && st["Sid"] != "ReadTheFleet"
                    && st["Sid"] != "WriteAndReadTransitions";
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
