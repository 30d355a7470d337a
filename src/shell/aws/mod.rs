//! Amazon Web Services: EC2 (the registry and the fence) and CloudWatch Logs
//! (the transition log).

pub mod budget;
pub mod cloudwatch;
pub mod ec2;
