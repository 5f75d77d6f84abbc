"""{{name}}: an elex plugin in Python. It implements `elex:agent/agent` of
the `elex:platform/plugin` world (the WIT in `wit/`). Build it with
`elex build`; load it with `elex load`."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types


class State:
    """What the agent keeps between calls (one instance serves one agent).

    Module-level: componentize-py may make a new `Agent` object for each
    call, so nothing is kept on `self`."""

    agent_id = ""
    name = ""
    answered = 0
    rewards: list[float] = []


class Agent(exports.Agent):
    def init(self, config: types.AgentConfig) -> None:
        State.agent_id = config.agent_id
        State.name = config.name
        log.log(log.Level.INFO, f"{State.name} ready", [])

    def handle(self, query: types.Query) -> types.Response:
        if not query.text.strip():
            raise Err(types.AgentError_InvalidInput("the question is empty"))
        State.answered += 1
        print(f"answering {query.id}")
        return types.Response(
            query_id=query.id,
            agent_id=State.agent_id,
            action=types.Action.DIRECT_ANSWER,
            content=f"{State.name} (python) heard: {query.text}",
            confidence=0.5,
            q_value=sum(State.rewards) / len(State.rewards) if State.rewards else 0.0,
            sources=[],
        )

    def feedback(self, query_id: str, reward: float) -> None:
        if not -1.0 <= reward <= 1.0:
            raise Err(types.AgentError_InvalidInput("reward must be in [-1, 1]"))
        State.rewards.append(reward)

    def validate(self, parameters: list[types.ParameterValue]) -> list[types.Validation]:
        return []

    def kpis(self, samples: list[types.CounterSample]) -> list[types.KpiValue]:
        return []

    def snapshot(self) -> bytes:
        return json.dumps({"answered": State.answered, "rewards": State.rewards}).encode()

    def restore(self, bytes: bytes) -> None:
        try:
            state = json.loads(bytes)
            State.answered = int(state["answered"])
            State.rewards = [float(r) for r in state["rewards"]]
        except (ValueError, KeyError, TypeError) as e:
            raise Err(types.AgentError_CorruptState(str(e)))

    def health(self) -> types.HealthReport:
        return types.HealthReport(types.HealthStatus.HEALTHY, f"{State.answered} answered")
