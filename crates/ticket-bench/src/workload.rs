//! A realistic command mix over a Zipf-distributed set of tickets.

use ticket_domain::{
    Actor, ActorId, ActorKind, CategoryId, Command, CommandBody, CommandId, CustomerId, IdError, OpenTicket, PlanId,
    Severity, SplitTicket, Status, Team, Text, TicketId, TicketState, Tier, Timestamp,
};

/// The workload both engine benchmarks drive: who sends, to how many tickets, for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkloadArgs {
    /// Concurrent clients, each waiting for its reply before the next command.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Tickets the commands are spread over.
    #[arg(long, default_value_t = 10_000)]
    pub tickets: usize,
    /// Zipf exponent of the ticket popularity (higher: hotter hot tickets).
    #[arg(long, default_value_t = 1.1)]
    pub zipf: f64,
    /// How long each phase runs.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Policy file for the decisions.
    /// (Default: the embedded deploy/policies/regional-operator.toml.)
    #[arg(long)]
    pub policy: Option<std::path::PathBuf>,
    /// Where the logs are written (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// Seed of the workload.
    #[arg(long, default_value_t = 20261121)]
    pub seed: u64,
}

/// xorshift64*: fast, seedable, good enough to pick tickets and commands.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

/// Zipf over `n` items: item `k` (0-based) has weight `1 / (k + 1)^s`, so a few hot tickets get
/// most commands, as in a real support queue during an incident.
#[derive(Debug, Clone)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut total = 0.0;
        for k in 0..n.max(1) {
            total += 1.0 / ((k + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf.partition_point(|c| *c < u).min(self.cdf.len() - 1)
    }
}

pub fn ticket_id(index: usize) -> TicketId {
    TicketId::from_uuid(uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | index as u128))
}

/// The identifiers and texts the mix uses, validated once.
#[derive(Debug, Clone)]
pub struct Vocabulary {
    agent: Actor,
    customer: Actor,
    customers: Vec<CustomerId>,
    standard: PlanId,
    advanced: PlanId,
    technical: CategoryId,
    billing: CategoryId,
    tier_2: Tier,
    tier_3: Tier,
    mail: Team,
    texts: [Text; 4],
}

impl Vocabulary {
    pub fn new() -> Result<Self, IdError> {
        Ok(Self {
            agent: Actor { kind: ActorKind::Agent, id: ActorId::new("bench-agent")? },
            customer: Actor { kind: ActorKind::Customer, id: ActorId::new("bench-customer")? },
            customers: (0..500).map(|n| CustomerId::new(format!("customer-{n}"))).collect::<Result<_, _>>()?,
            standard: PlanId::new("standard")?,
            advanced: PlanId::new("advanced")?,
            technical: CategoryId::new("technical")?,
            billing: CategoryId::new("billing")?,
            tier_2: Tier::new("tier-2")?,
            tier_3: Tier::new("tier-3")?,
            mail: Team::new("mail")?,
            texts: [
                Text::new("text", "mail delivery delayed for several users")?,
                Text::new("text", "users report delays of up to an hour since this morning")?,
                Text::new("text", "please send the message headers")?,
                Text::new("text", "headers attached, still happening")?,
            ],
        })
    }

    /// The next command a support tool or a customer would issue on a ticket in this state.
    pub fn next_command(
        &self,
        rng: &mut Rng,
        ticket: TicketId,
        state: &TicketState,
        id: String,
        now: Timestamp,
    ) -> Result<Command, IdError> {
        let [title, description, request, reply] = &self.texts;
        let r = rng.unit();
        let (actor, body) = match state {
            TicketState::Unopened => {
                let (plan, category, severity) = if r < 0.15 {
                    (&self.advanced, &self.technical, Severity::A)
                } else if r < 0.30 {
                    (&self.standard, &self.billing, Severity::B)
                } else if r < 0.65 {
                    (&self.standard, &self.technical, Severity::B)
                } else {
                    (&self.standard, &self.technical, Severity::C)
                };
                let open = OpenTicket {
                    customer: rng.pick(&self.customers).clone(),
                    plan: plan.clone(),
                    category: category.clone(),
                    title: title.clone(),
                    description: description.clone(),
                    severity,
                };
                (&self.agent, CommandBody::Open(open))
            }
            TicketState::Opened(t) => match t.status {
                Status::Open if r < 0.30 => (&self.agent, CommandBody::RecordAgentResponse { message: reply.clone() }),
                Status::Open if r < 0.45 => {
                    (&self.agent, CommandBody::RequestCustomerInfo { request: request.clone() })
                }
                Status::Open if r < 0.65 => {
                    (&self.customer, CommandBody::RecordCustomerReply { message: reply.clone() })
                }
                Status::Open if r < 0.72 => {
                    let allowed: &[Severity] = if t.plan == self.advanced && t.category == self.technical {
                        &[Severity::A, Severity::B, Severity::C]
                    } else {
                        &[Severity::B, Severity::C]
                    };
                    let choices: Vec<Severity> = allowed.iter().copied().filter(|s| *s != t.severity).collect();
                    (&self.agent, CommandBody::SetSeverity { severity: *rng.pick(&choices), reason: request.clone() })
                }
                Status::Open if r < 0.78 => {
                    let tier = if t.tier.as_ref() == Some(&self.tier_2) { &self.tier_3 } else { &self.tier_2 };
                    let escalate = CommandBody::Escalate {
                        tier: tier.clone(),
                        team: Some(self.mail.clone()),
                        reason: request.clone(),
                    };
                    (&self.agent, escalate)
                }
                Status::Open if r < 0.80 => {
                    let new_ticket = TicketId::from_uuid(uuid::Uuid::from_u64_pair(rng.next_u64(), rng.next_u64()));
                    let split = SplitTicket {
                        new_ticket,
                        category: self.billing.clone(),
                        severity: Severity::C,
                        title: title.clone(),
                        description: Text::empty(),
                    };
                    (&self.agent, CommandBody::Split(split))
                }
                Status::Open => (&self.agent, CommandBody::Resolve { resolution: reply.clone() }),
                Status::AwaitingCustomer if r < 0.6 => {
                    (&self.customer, CommandBody::RecordCustomerReply { message: reply.clone() })
                }
                Status::AwaitingCustomer if r < 0.85 => {
                    (&self.agent, CommandBody::RecordAgentResponse { message: request.clone() })
                }
                Status::AwaitingCustomer => (&self.agent, CommandBody::Resolve { resolution: reply.clone() }),
                Status::Resolved => (&self.customer, CommandBody::Reopen { reason: reply.clone() }),
            },
        };
        Ok(Command { id: CommandId::new(id)?, ticket_id: ticket, actor: actor.clone(), issued_at: now, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_the_first_items() {
        let zipf = Zipf::new(1000, 1.1);
        let mut rng = Rng::new(42);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[9] && counts[9] > counts[99] && counts[99] > counts[999]);
        assert!(counts[..10].iter().sum::<u32>() > 30_000, "the ten hottest tickets get a third of the commands");
    }
}
