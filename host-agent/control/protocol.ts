// The control API: one JSON object per line over a root-only Unix socket.
//   request  {"id": 1, "op": "attach", "args": {...}}
//   reply    {"id": 1, "ok": true, "result": {...}}  or  {"id": 1, "ok": false, "error": "...", "code": "ENOENT"}
export type ControlOp = 'vm.create' | 'vm.delete' | 'attach' | 'detach' | 'list' | 'status';

export interface ControlRequest {
  id: number;
  op: ControlOp;
  args?: Record<string, unknown>;
}

export type ControlReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: string; code?: string };

export const MAX_CONTROL_LINE = 1 << 20;
