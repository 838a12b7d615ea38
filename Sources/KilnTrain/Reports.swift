import Foundation

/// The training history as CSV, and the learning curves and confusion matrix as standalone SVG.
public enum Reports {
    public static func historyCSV(_ history: [EpochRecord]) -> String {
        var s = "epoch,loss,accuracy,val_loss,val_accuracy\n"
        for r in history {
            let vl = r.validationLoss.map { String(format: "%.6f", $0) } ?? ""
            let va = r.validationAccuracy.map { String(format: "%.6f", $0) } ?? ""
            s += "\(r.epoch),\(String(format: "%.6f", r.loss)),\(String(format: "%.6f", r.accuracy)),\(vl),\(va)\n"
        }
        return s
    }

    static func escape(_ t: String) -> String {
        t.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// Two panels: loss and validation loss; accuracy and validation accuracy; a mark at the kept epoch.
    public static func learningCurvesSVG(_ history: [EpochRecord], bestEpoch: Int, title: String) -> String {
        let panelW = 360.0, panelH = 220.0, margin = 48.0
        var svg = #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(Int(2 * panelW + 3 * margin))" height="\#(Int(panelH + 2.2 * margin))" font-family="sans-serif" font-size="11">"#
        svg += "\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"\(margin)\" y=\"18\" font-size=\"13\">\(escape(title))</text>\n"
        let n = max(history.count, 1)
        func panel(_ x0: Double, _ name: String, _ a: [Double], _ b: [Double?], fixedMax: Double?) {
            let y0 = margin
            let values = a + b.compactMap { $0 }
            let lo = fixedMax == nil ? 0 : 0.0
            let hi = fixedMax ?? max((values.max() ?? 1) * 1.05, 1e-9)
            func px(_ e: Int) -> Double { x0 + Double(e - 1) / Double(max(n - 1, 1)) * panelW }
            func py(_ v: Double) -> Double { y0 + panelH - (v - lo) / (hi - lo) * panelH }
            svg += "<rect x=\"\(x0)\" y=\"\(y0)\" width=\"\(panelW)\" height=\"\(panelH)\" fill=\"none\" stroke=\"#999\"/>\n"
            for k in 0...4 {
                let v = lo + (hi - lo) * Double(k) / 4
                svg += "<text x=\"\(x0 - 4)\" y=\"\(py(v) + 4)\" text-anchor=\"end\">\(String(format: "%.2f", v))</text>\n"
            }
            svg += "<text x=\"\(x0 + panelW / 2)\" y=\"\(y0 + panelH + 30)\" text-anchor=\"middle\">epoch (1–\(n)); \(name)</text>\n"
            func line(_ vs: [Double?], _ color: String, _ label: String, _ dy: Double) {
                var pts: [String] = []
                for (i, v) in vs.enumerated() { if let v { pts.append(String(format: "%.1f,%.1f", px(i + 1), py(v))) } }
                guard !pts.isEmpty else { return }
                svg += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.5\" points=\"\(pts.joined(separator: " "))\"/>\n"
                svg += "<text x=\"\(x0 + panelW - 4)\" y=\"\(y0 + 14 + dy)\" text-anchor=\"end\" fill=\"\(color)\">\(label)</text>\n"
            }
            line(a.map { $0 }, "#1f77b4", "train", 0)
            line(b, "#d62728", "validation", 14)
            if bestEpoch >= 1 {
                svg += "<line x1=\"\(px(bestEpoch))\" y1=\"\(y0)\" x2=\"\(px(bestEpoch))\" y2=\"\(y0 + panelH)\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"/>\n"
                svg += "<text x=\"\(px(bestEpoch) + 3)\" y=\"\(y0 + panelH - 4)\" fill=\"#2ca02c\">kept: epoch \(bestEpoch)</text>\n"
            }
        }
        panel(margin, "loss", history.map(\.loss), history.map(\.validationLoss), fixedMax: nil)
        panel(2 * margin + panelW, "accuracy", history.map(\.accuracy), history.map(\.validationAccuracy), fixedMax: 1)
        return svg + "</svg>\n"
    }

    /// The confusion matrix as a heat map (rows: true class, columns: predicted), counts in the cells.
    public static func confusionSVG(_ report: ClassificationReport, classNames: [String], title: String) -> String {
        let c = classNames.count
        let cell = max(18.0, min(40.0, 480.0 / Double(max(c, 1))))
        let left = 20.0 + 7.0 * Double(min(classNames.map(\.count).max() ?? 4, 24)), top = 60.0
        let w = left + cell * Double(c) + 20, h = top + cell * Double(c) + 50
        var svg = #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(Int(w))" height="\#(Int(h))" font-family="sans-serif" font-size="10">"#
        svg += "\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        svg += "<text x=\"10\" y=\"18\" font-size=\"13\">\(escape(title))</text>\n"
        svg += "<text x=\"\(left)\" y=\"\(top - 24)\">predicted →</text>\n"
        for i in 0..<c {
            let rowTotal = max(report.confusion[i].reduce(0, +), 1)
            svg += "<text x=\"\(left - 4)\" y=\"\(top + cell * (Double(i) + 0.6))\" text-anchor=\"end\">\(escape(String(classNames[i].prefix(24))))</text>\n"
            for j in 0..<c {
                let v = report.confusion[i][j]
                let shade = Int(255 - 200 * Double(v) / Double(rowTotal))
                let fill = i == j ? "rgb(\(shade),\(shade),255)" : "rgb(255,\(shade),\(shade))"
                svg += "<rect x=\"\(left + cell * Double(j))\" y=\"\(top + cell * Double(i))\" width=\"\(cell)\" height=\"\(cell)\" fill=\"\(v == 0 ? "white" : fill)\" stroke=\"#ccc\"/>\n"
                if v > 0 {
                    svg += "<text x=\"\(left + cell * (Double(j) + 0.5))\" y=\"\(top + cell * (Double(i) + 0.6))\" text-anchor=\"middle\">\(v)</text>\n"
                }
            }
            svg += "<text x=\"\(left + cell * (Double(i) + 0.5))\" y=\"\(top - 6)\" text-anchor=\"middle\">\(i)</text>\n"
        }
        svg += "<text x=\"\(left)\" y=\"\(top + cell * Double(c) + 20)\">rows: true class; columns: predicted (column i = class i); accuracy \(String(format: "%.1f%%", 100 * report.accuracy))</text>\n"
        return svg + "</svg>\n"
    }
}
