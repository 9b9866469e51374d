/**
 * Names shared by workflows, workers and clients: task queues and search attributes.
 */
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/** Task queue of the cluster worker: change workflows (the parents) run here. */
export const CLUSTER_TASK_QUEUE = 'fos1-cluster';

/** Task queue of the worker on `node`: its node workflows and activities run only there. */
export function nodeTaskQueue(node: string): string {
  return `fos1-node-${node}`;
}

/** Workflow id fos1 uses for a change request's parent workflow. */
export function changeWorkflowId(changeId: string): string {
  return `change-${changeId}`;
}

/**
 * Workflow id of the node workflow that currently changes `node`. Temporal runs at most one
 * workflow per id, so this id is the node's lock: a second change waits until it is free.
 */
export function nodeLockWorkflowId(node: string): string {
  return `node-change/${node}`;
}

/** Custom search attributes; `scripts/start-dev.ts` and the test environment register them. */
export const SearchAttributes = {
  changeId: defineSearchAttributeKey('Fos1ChangeId', SearchAttributeType.KEYWORD),
  author: defineSearchAttributeKey('Fos1Author', SearchAttributeType.KEYWORD),
  targetNodes: defineSearchAttributeKey('Fos1TargetNodes', SearchAttributeType.KEYWORD_LIST),
  status: defineSearchAttributeKey('Fos1Status', SearchAttributeType.KEYWORD),
  /** The wave a staged rollout runs now (or ran last); the phase is `Fos1Status`. */
  wave: defineSearchAttributeKey('Fos1Wave', SearchAttributeType.KEYWORD),
  /** A change's approval: pending, approved, rejected, expired, void (set only when the policy asks for one). */
  approval: defineSearchAttributeKey('Fos1Approval', SearchAttributeType.KEYWORD),
  /** While pending: the roles that may approve (the author never may). */
  approvers: defineSearchAttributeKey('Fos1Approvers', SearchAttributeType.KEYWORD_LIST),
} as const;

/** The same attributes in the form `temporal server start-dev --search-attribute` and the test server take. */
export const SEARCH_ATTRIBUTE_DEFINITIONS: Record<string, 'Keyword' | 'KeywordList'> = {
  Fos1ChangeId: 'Keyword',
  Fos1Author: 'Keyword',
  Fos1TargetNodes: 'KeywordList',
  Fos1Status: 'Keyword',
  Fos1Wave: 'Keyword',
  Fos1Approval: 'Keyword',
  Fos1Approvers: 'KeywordList',
};
