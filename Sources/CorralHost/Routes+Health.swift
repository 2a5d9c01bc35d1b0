import CorralAPI
import CorralCore
import Hummingbird
import Prometheus

extension HostAPI {
    package func addHealthRoutes(to router: Router<CorralRequestContext>) {
        router.get("/v1/health") { _, _ -> Response in
            let engine = (try? await provisioner.engine.ping()) == true ? "ok" : "unavailable"
            return JSONResponse.make(HealthStatus(status: "ok", engine: engine, version: CorralVersion.current))
        }
        router.get("/metrics") { _, _ -> Response in
            var buffer: [UInt8] = []
            metrics.emit(into: &buffer)
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: buffer)))
        }
    }
}
