//! The least-privilege IAM policy for chainwatch's instances, rendered for a
//! fleet name: exactly the EC2 actions the daemon uses, with tag conditions
//! so that it can only stop, tag or re-associate instances of its own fleet.

use serde_json::{Value, json};

use crate::shell::aws::ec2::tags;

/// Every action chainwatch (daemon, worker, history) calls.
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

/// The policy document for `fleet`, writing transitions to `log_group`.
pub fn policy(fleet: &str, log_group: &str) -> Value {
    let group_arn = format!("arn:aws:logs:*:*:log-group:{log_group}");
    let fleet_tag = format!("aws:ResourceTag/{}", tags::FLEET);
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ReadTheFleet",
                "Effect": "Allow",
                "Action": ["ec2:DescribeInstances", "ec2:DescribeAddresses"],
                "Resource": "*"
            },
            {
                "Sid": "FenceOnlyThisFleet",
                "Effect": "Allow",
                "Action": "ec2:StopInstances",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {"StringEquals": {fleet_tag.clone(): fleet}}
            },
            {
                "Sid": "TagOnlyThisFleetWithChainwatchKeys",
                "Effect": "Allow",
                "Action": "ec2:CreateTags",
                "Resource": "arn:aws:ec2:*:*:instance/*",
                "Condition": {
                    "StringEquals": {fleet_tag.clone(): fleet},
                    "ForAllValues:StringLike": {"aws:TagKeys": ["chainwatch:*"]}
                }
            },
            {
                "Sid": "MoveTheElasticIpWithinThisFleet",
                "Effect": "Allow",
                "Action": "ec2:AssociateAddress",
                "Resource": [
                    "arn:aws:ec2:*:*:elastic-ip/*",
                    "arn:aws:ec2:*:*:instance/*"
                ],
                "Condition": {"StringEquals": {fleet_tag: fleet}}
            },
            {
                "Sid": "WriteAndReadTransitions",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:PutLogEvents",
                    "logs:FilterLogEvents"
                ],
                "Resource": [group_arn.clone(), format!("{group_arn}:log-stream:*")]
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_actions_used_and_scopes_stop_by_tag() {
        let p = policy("prod", "/chainwatch/transitions");
        let mut actions: Vec<String> = Vec::new();
        for st in p["Statement"].as_array().unwrap() {
            assert_eq!(st["Effect"], "Allow");
            match &st["Action"] {
                Value::String(a) => actions.push(a.clone()),
                Value::Array(a) => {
                    actions.extend(a.iter().map(|v| v.as_str().unwrap().to_string()))
                }
                _ => panic!("bad Action"),
            }
            let ec2_writes = st["Action"]
                != json!(["ec2:DescribeInstances", "ec2:DescribeAddresses"])
                && st["Sid"] != "WriteAndReadTransitions";
            if ec2_writes {
                assert_eq!(
                    st["Condition"]["StringEquals"]["aws:ResourceTag/chainwatch:fleet"], "prod",
                    "{st}"
                );
                assert_ne!(st["Resource"], "*", "{st}");
            }
        }
        actions.sort();
        let mut want: Vec<String> = ACTIONS.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(actions, want);
    }

    #[test]
    fn the_file_in_the_repository_is_the_default_rendering() {
        let file: Value =
            serde_json::from_str(include_str!("../iam/chainwatch-policy.json")).unwrap();
        assert_eq!(
            file,
            policy(
                &crate::config::AwsConfig::default().fleet,
                &crate::config::AnnounceConfig::default().cloudwatch_log_group
            )
        );
    }
}
