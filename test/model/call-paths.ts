// Which paths of the call model run against the server. The model's exact state space (every
// counter combination) is far too large to execute, and every path pays for a server, a store and
// sockets of its own, so the paths are few and long: @xstate/graph maps every exact state and
// transition of the model, and a greedy walk over that map strings together transitions until
// every coverage goal (see coverageGoal: each event from each class of source state that matters
// to the server) has been taken at least once. Each walk goes to the nearest goal not yet covered
// (breadth-first over the exact states, so every state along it is one the events really produce)
// and ends when it is long enough or no goal is reachable from where it stands.
import { createTestModel, type AdjacencyMap, type AdjacencyValue, type StatePath, type Step, type TestPath } from '@xstate/graph';
import { callModel, coverageGoals, type CallModelEvent, type ModelSnapshot, type StoreKind } from './call-model.js';

export type CallPath = TestPath<ModelSnapshot, CallModelEvent>;

/** Steps after which a walk stops taking new goals (the first goal of a walk is taken however far it is). */
export const MAX_STEPS_PER_PATH = 40;

const serializeState = (s: ModelSnapshot) => JSON.stringify([s.value, s.context]);

interface Edge {
  event: CallModelEvent;
  to: string;
  goals: string[];
}

interface Graph {
  initial: string;
  states: Map<string, ModelSnapshot>;
  /** Enabled transitions only (the adjacency map also lists events a state ignores). */
  edges: Map<string, Edge[]>;
}

function testModel(store: StoreKind) {
  // Exact identity, so traversals never merge states with different expectations.
  return createTestModel(callModel, { input: { store }, serializeState });
}

function graphOf(store: StoreKind): Graph {
  const adjacency = testModel(store).getAdjacencyMap() as AdjacencyMap<ModelSnapshot, CallModelEvent>;
  const states = new Map<string, ModelSnapshot>();
  const edges = new Map<string, Edge[]>();
  let initial: string | undefined;
  type Transition = AdjacencyValue<ModelSnapshot, CallModelEvent>['transitions'][never];
  for (const [key, { state, transitions }] of Object.entries(adjacency)) {
    initial ??= key; // the traversal starts at the initial state
    states.set(key, state);
    const out: Edge[] = [];
    for (const { event, state: next } of Object.values(transitions) as Transition[]) {
      if (!state.can(event)) continue;
      out.push({ event, to: serializeState(next), goals: coverageGoals(state, event, next) });
    }
    edges.set(key, out);
  }
  if (!initial) throw new Error('empty model');
  return { initial, states, edges };
}

/** The shortest route from `from` whose last edge covers a goal not covered yet. */
function routeToNearestGoal(graph: Graph, from: string, uncovered: ReadonlySet<string>): Edge[] | undefined {
  const previous = new Map<string, { state: string; edge: Edge } | null>([[from, null]]);
  const queue = [from];
  for (let head = 0; head < queue.length; head++) {
    const state = queue[head]!;
    for (const edge of graph.edges.get(state) ?? []) {
      if (edge.goals.some((g) => uncovered.has(g))) {
        const route = [edge];
        for (let at = previous.get(state); at; at = previous.get(at.state)) route.unshift(at.edge);
        return route;
      }
      if (!previous.has(edge.to)) {
        previous.set(edge.to, { state, edge });
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
    { state: graph.states.get(graph.initial)!, event: { type: 'xstate.init' } as unknown as CallModelEvent },
  ];
  for (const edge of route) steps.push({ state: graph.states.get(edge.to)!, event: edge.event });
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
  const uncovered = new Set<string>();
  for (const out of graph.edges.values()) for (const edge of out) for (const goal of edge.goals) uncovered.add(goal);
  const goals = uncovered.size;
  const routes: Edge[][] = [];
  while (uncovered.size > 0) {
    const route: Edge[] = [];
    let at = graph.initial;
    for (;;) {
      const next = routeToNearestGoal(graph, at, uncovered);
      if (!next || (route.length > 0 && route.length + next.length > maxSteps)) break;
      for (const edge of next) for (const goal of edge.goals) uncovered.delete(goal);
      route.push(...next);
      at = next.at(-1)!.to;
    }
    if (route.length === 0) throw new Error(`coverage goals unreachable: ${[...uncovered].join(', ')}`);
    routes.push(route);
  }
  return { paths: routes.map((r) => toTestPath(store, graph, r)), goals, steps: routes.reduce((n, r) => n + r.length, 0) };
}
