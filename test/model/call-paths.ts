// Which paths of the call model run against the server. The model's exact state space (every
// counter combination) is far too large to execute, and every path pays for a server, a store and
// sockets of its own, so the paths are few and long: @xstate/graph maps every exact state and
// transition of the model, and a greedy walk over that map strings together transitions until
// every coverage goal (see coverageGoals: each event paired with each fact about its source state
// that matters to the server) has been taken at least once. Each walk goes to the nearest goal not
// yet covered (breadth-first over the exact states, so every state along it is one the events
// really produce) and ends when it is MAX_STEPS_PER_PATH long or no goal is reachable from where it
// stands. A walk may go on through several sessions of the call (a reconnect after the session
// expired or ended starts a fresh one), so few paths pay for a server start.
import { createTestModel, type AdjacencyMap, type AdjacencyValue, type StatePath, type Step, type TestPath } from '@xstate/graph';
import { callModel, coverageGoals, type CallModelEvent, type ModelSnapshot, type StoreKind } from './call-model.js';

export type CallPath = TestPath<ModelSnapshot, CallModelEvent>;

/** Steps after which a walk stops taking new goals (the first goal of a walk is taken however far it is). */
export const MAX_STEPS_PER_PATH = 40;

const serializeState = (s: ModelSnapshot) => JSON.stringify([s.value, s.context]);

/** A transition of the exact graph; states and goals are numbered (the walk is a hot loop). */
interface Edge {
  event: CallModelEvent;
  to: number;
  goals: number[];
}

interface Graph {
  /** By number; 0 is the initial state. */
  states: ModelSnapshot[];
  /** Enabled transitions only, by source state (the adjacency map also lists events a state ignores). */
  edges: Edge[][];
  /** Goal names by number. */
  goals: string[];
}

function testModel(store: StoreKind) {
  // Exact identity, so traversals never merge states with different expectations.
  return createTestModel(callModel, { input: { store }, serializeState });
}

function graphOf(store: StoreKind): Graph {
  const adjacency = testModel(store).getAdjacencyMap() as AdjacencyMap<ModelSnapshot, CallModelEvent>;
  type Transition = AdjacencyValue<ModelSnapshot, CallModelEvent>['transitions'][never];
  // The traversal starts at the initial state, so it is the first entry.
  const entries = Object.entries(adjacency);
  const index = new Map(entries.map(([key], i) => [key, i]));
  const goalIndex = new Map<string, number>();
  const goals: string[] = [];
  const goalId = (goal: string) => {
    let id = goalIndex.get(goal);
    if (id === undefined) goalIndex.set(goal, (id = goals.push(goal) - 1));
    return id;
  };
  const edges = entries.map(([, { state, transitions }]) =>
    (Object.values(transitions) as Transition[])
      .filter(({ event }) => state.can(event))
      .map(({ event, state: next }) => ({
        event,
        to: index.get(serializeState(next))!,
        goals: coverageGoals(state, event, next).map(goalId),
      })),
  );
  return { states: entries.map(([, { state }]) => state), edges, goals };
}

/** The shortest route from `from` whose last edge covers a goal not covered yet (breadth-first). */
function routeToNearestGoal(graph: Graph, from: number, uncovered: Uint8Array): Edge[] | undefined {
  const via: Array<{ state: number; edge: Edge } | null | undefined> = new Array(graph.states.length);
  via[from] = null;
  const queue = [from];
  for (let head = 0; head < queue.length; head++) {
    const state = queue[head]!;
    for (const edge of graph.edges[state]!) {
      if (edge.goals.some((g) => uncovered[g])) {
        const route = [edge];
        for (let at = via[state]; at; at = via[at.state]) route.unshift(at.edge);
        return route;
      }
      if (via[edge.to] === undefined) {
        via[edge.to] = { state, edge };
        queue.push(edge.to);
      }
    }
  }
  return undefined;
}

/** A path as @xstate/graph's TestModel runs it: each step is an event and the state it leads to. */
function toTestPath(store: StoreKind, graph: Graph, route: Edge[]): CallPath {
  const model = testModel(store);
  const steps: Array<Step<ModelSnapshot, CallModelEvent>> = [
    { state: graph.states[0]!, event: { type: 'xstate.init' } as unknown as CallModelEvent },
  ];
  for (const edge of route) steps.push({ state: graph.states[edge.to]!, event: edge.event });
  const statePath: StatePath<ModelSnapshot, CallModelEvent> = { state: steps.at(-1)!.state, steps, weight: route.length };
  return {
    ...statePath,
    description: route.map((e) => e.event.type).join(' → '),
    test: (params) => model.testPath(statePath, params),
  };
}

export interface Coverage {
  paths: CallPath[];
  goals: number;
  steps: number;
}

/** Few long paths that together take every coverage goal the model can reach on `store`. */
export function coveringPaths(store: StoreKind, maxSteps = MAX_STEPS_PER_PATH): Coverage {
  const graph = graphOf(store);
  const uncovered = new Uint8Array(graph.goals.length).fill(1);
  let left = graph.goals.length;
  const routes: Edge[][] = [];
  while (left > 0) {
    const route: Edge[] = [];
    let at = 0;
    for (;;) {
      const next = routeToNearestGoal(graph, at, uncovered);
      if (!next || (route.length > 0 && route.length + next.length > maxSteps)) break;
      for (const edge of next) {
        for (const goal of edge.goals) {
          left -= uncovered[goal]!;
          uncovered[goal] = 0;
        }
      }
      route.push(...next);
      at = next.at(-1)!.to;
    }
    if (route.length === 0) throw new Error(`coverage goals unreachable: ${graph.goals.filter((_, i) => uncovered[i]).join(', ')}`);
    routes.push(route);
  }
  return {
    paths: routes.map((r) => toTestPath(store, graph, r)),
    goals: graph.goals.length,
    steps: routes.reduce((n, r) => n + r.length, 0),
  };
}
