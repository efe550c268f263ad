//! The SQL Veil accepts, shared by users' queries (`engine`) and policy
//! conditions (`policy::predicate`): limits on the text and shape of what
//! is sent (`limits`), functions whose output is bounded (`bounded`), and
//! the planner threads that plan under a deadline on large stacks
//! (`planner_pool`), and the stop flag of the plan or query running on a
//! thread (`stop`), which bounded functions check before each call.

pub mod bounded;
pub mod limits;
pub mod parameters;
pub mod planner_pool;
pub mod stop;
