import CorralCore
import CorralHost

/// The frame around every console page: the head (the console's own style sheet and script,
/// nothing else), a skip link, the navigation and who is logged in.
struct ConsoleLayout {
    enum Section: String, Sendable {
        case sessions, sandboxes, pools, tenants, none
    }

    var title: String
    var section: Section
    var access: ConsoleAccess?
    var body: HTML

    func render() -> HTML {
        let css = "/console/static/console.css?v=\(ConsoleAssets.version)"
        let js = "/console/static/console.js?v=\(ConsoleAssets.version)"
        return """
            <!doctype html>
            <html lang="en">
            <head>
            <meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <meta name="referrer" content="same-origin">
            <title>\(title) · corral console</title>
            <link rel="icon" href="/console/static/icon.svg" type="image/svg+xml">
            <link rel="stylesheet" href="\(css)">
            <script src="\(js)" defer></script>
            </head>
            <body>
            <a class="skip" href="#main">Skip to content</a>
            <header class="top">
            <a class="brand" href="/console/sessions">corral</a>
            \(navigation)
            \(who)
            </header>
            <main id="main" tabindex="-1">
            \(body)
            </main>
            </body>
            </html>

            """
    }

    var navigation: HTML {
        guard let access else { return "" }
        var items: [(Section, String, String)] = [
            (.sessions, "/console/sessions", "Sessions"), (.sandboxes, "/console/sandboxes", "Sandboxes"),
            (.pools, "/console/pools", "Pools &amp; workers"),
        ]
        if access.viewer.isOperator { items.append((.tenants, "/console/tenants", "Tenants")) }
        let links: [HTML] = items.map { section, href, label in
            let current: HTML = section == self.section ? " aria-current=\"page\"" : ""
            return "<a href=\"\(href)\"\(current)>\(HTML(trusted: label))</a>"
        }
        return "<nav aria-label=\"Console\">\(links.joined(separator: " "))</nav>"
    }

    var who: HTML {
        guard let access else { return "" }
        let role: HTML = access.viewer.isOperator ? "operator" : "tenant <b>\(access.viewer.name)</b>"
        guard let csrf = access.csrf else { return "<div class=\"who\">\(role) (unix socket)</div>" }
        return """
            <div class="who">\(role)
            <form method="post" action="/console/logout"><input type="hidden" name="csrf" value="\(csrf)">\
            <button type="submit">Log out</button></form></div>
            """
    }
}
