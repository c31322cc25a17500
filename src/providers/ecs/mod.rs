//! Amazon ECS on Fargate behind an Application Load Balancer: the provider is being
//! built piece by piece (issue 20). Here so far: how a new task definition is made
//! from the live one or a template (`task_definition`). Signing and keys are
//! `crate::aws`'s.

pub mod task_definition;
