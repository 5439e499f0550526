"""Services that move work: intake, cases, exception queues, the dispatcher and durable workflows."""
