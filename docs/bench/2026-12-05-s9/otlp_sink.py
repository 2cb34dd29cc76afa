# Used for BENCHMARKS.md "Session 9": python otlp_sink.py 127.0.0.1:4317
# A minimal OTLP/gRPC trace receiver: counts spans, keeps nothing (a stand-in for a collector).
import sys, threading, time
from concurrent import futures
import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb, trace_service_pb2_grpc as g
count = [0, 0]
class Sink(g.TraceServiceServicer):
    def Export(self, request, context):
        n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        count[0] += n; count[1] += 1
        return pb.ExportTraceServiceResponse()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
g.add_TraceServiceServicer_to_server(Sink(), server)
server.add_insecure_port(sys.argv[1])
server.start()
try:
    while True:
        time.sleep(10); print(f"spans={count[0]} exports={count[1]}", flush=True)
except KeyboardInterrupt:
    pass
