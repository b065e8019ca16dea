// Package boutique is Online Boutique — the shop the SPRIGHT paper
// measures — as real services: frontend (HTML pages, currency selector,
// session cookie), productcatalog, currency (a rates table, money in
// units+nanos, no floats), cart (per session, in the service's memory,
// bounded), recommendation, ad (by category), shipping (quote from the item
// count, tracking IDs), payment (Luhn, expiry, card network; nothing is
// charged), email (the confirmation, rendered) and checkout (orchestrates
// cart → prices → shipping → payment → shipping → empty cart → email). The
// logic is written for this project after the public Online Boutique's
// behaviour; its product IDs, names, prices and categories are that
// catalogue's, the pictures are small SVGs shipped in static/img.
//
// # One implementation, two front ends
//
// The same Shop runs as SPRIGHT SDK functions (Shop.Handler; registered in
// pkg/samples as the behaviours "boutique-frontend", "boutique-cart", … so
// `spright function --behavior boutique-cart` or a chain.yaml serves them)
// and as plain HTTP services for the Knative baseline (Shop.ServiceHandler
// for a service, Shop.FrontendHandler for the shop, calling the services
// over HTTP through an HTTPCaller).
//
// # How a web request crosses the chain
//
// The gateway's "web" protocol adapter (pkg/adapter, attached at the
// chain's http point) wraps the HTTP request — method, path, raw query,
// the headers a web application needs (Cookie, Content-Type, Referer, …)
// and the body — into a binary request envelope, which is the payload the
// chain's first function reads in its slot. The last function writes a
// response envelope (status, headers such as Content-Type, Set-Cookie and
// Location, body) that the adapter turns into the HTTP reply.
//
// The paper's model is one chain per user action. Every request enters at
// the frontend (the gateway's "*" route). Its first phase (Shop.Begin)
// reads the envelope: the session and currency cookies, the path and the
// form. Static files, redirects and bad input are answered at once;
// otherwise it picks the action — index, setCurrency, browseProduct,
// addToCart, viewCart, emptyCart, checkout — sets it as the message's
// topic (Message.SetTopic) and replaces the payload with a Doc, a small
// JSON document. The frontend's route for that topic is the action's
// itinerary (Itineraries; config/samples/boutique/chain.yaml lists the
// same), and each service on it reads from the Doc what it needs and adds
// its part: productcatalog the products, cart the session's lines, currency
// every price converted, recommendation product IDs, ad a banner, and so
// on. A service visited twice in one itinerary does the second half of its
// job the second time, told by the Doc's state (checkout totals once the
// prices are in; shipping ships and cart empties once the payment went
// through). The itinerary ends at the frontend again: its second phase
// (Shop.Render) renders the page from the Doc into a response envelope and
// sets the topic "reply", for which no function has a route, so the slot
// returns to the gateway. Each hop is a 16-byte descriptor; the Doc stays
// in the same shared-memory slot all along.
//
// The first failure is recorded in the Doc (Doc.Error: status, message,
// service); later services pass it on untouched and the frontend renders
// an error page with that status — an unknown product is a 404 page, a
// malformed card or an empty-cart checkout a 400 page saying why.
//
// The plain frontend (Shop.Serve) walks the same itineraries itself,
// calling each service with the Doc as an HTTP body: the coordinating front
// end of the paper's Knative setup. Both paths run the same code, so a
// checkout answers the same page through either (a test compares them).
package boutique
