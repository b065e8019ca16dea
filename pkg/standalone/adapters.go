package standalone

import (
	"context"
	"fmt"
	"net"
	"sort"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/coap"
	"github.com/spright-dev/spright/pkg/adapter/mqtt"

	_ "github.com/spright-dev/spright/pkg/adapter/cloudevents" // registers "cloudevents"
	_ "github.com/spright-dev/spright/pkg/adapter/wasm"        // registers "wasm" (custom adapters)
)

// adapterFronts are the chain's protocol adapters and their listeners.
type adapterFronts struct {
	mqtt     *mqtt.Server
	coap     *coap.Server
	mqttAddr net.Addr
	coapAddr net.Addr
}

// startAdapters makes the chain's hook points and attaches the adapters of
// its protocol. The MQTT and CoAP listeners run where Options.MQTTListen /
// CoAPListen or chain.yaml's mqtt.listen / coap.listen say (a listener
// attaches its adapter even if the protocol does not name it).
func (r *Runner) startAdapters() error {
	cf := r.File
	o := cf.adapterOptions()
	r.Adapters = adapter.NewChain(cf.Name, r.Gateway.AdapterInvoker(r.Chain), o)
	mqttListen, coapListen := r.opts.MQTTListen, r.opts.CoAPListen
	if mqttListen == "" && cf.MQTT != nil {
		mqttListen = cf.MQTT.Listen
	}
	if coapListen == "" && cf.CoAP != nil {
		coapListen = cf.CoAP.Listen
	}
	for p, l := range map[string]string{"mqtt": mqttListen, "coap": coapListen} {
		if cf.Has(p) && l == "" {
			r.log.Warn("the chain's protocol includes "+p+" but no listener is configured (--"+p+"-listen or "+p+".listen in chain.yaml)", zap.String("chain", cf.Name))
		}
	}
	attach := map[string]bool{}
	for _, p := range cf.Protocols()[1:] {
		attach[p] = true
	}
	if mqttListen != "" {
		attach["mqtt"] = true
	}
	if coapListen != "" {
		attach["coap"] = true
	}
	var names []string
	for p := range attach {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if _, err := r.Adapters.AttachNamed(context.Background(), p); err != nil {
			return fmt.Errorf("chain %q: %w", cf.Name, err)
		}
	}
	slot := r.Chain.Pool().SlotSize()
	var err error
	if mqttListen != "" {
		// Packets a bit larger than a slot still get a PUBACK saying why
		// (quota exceeded); much larger ones end the connection.
		r.fronts.mqtt = mqtt.NewServer(mqtt.Config{Chains: []*adapter.Chain{r.Adapters}, MaxPacketSize: uint32(slot) + 64<<10, Logger: r.log})
		if r.fronts.mqttAddr, err = r.fronts.mqtt.Listen(mqttListen); err != nil {
			return err
		}
		r.log.Info("MQTT listener", zap.String("chain", cf.Name), zap.Stringer("listen", r.fronts.mqttAddr))
	}
	if coapListen != "" {
		r.fronts.coap = coap.NewServer(coap.Config{Chains: []*adapter.Chain{r.Adapters}, MaxMessageSize: max(uint32(slot)*2, 64<<10), Logger: r.log})
		if r.fronts.coapAddr, err = r.fronts.coap.Listen(coapListen); err != nil {
			return err
		}
		r.log.Info("CoAP listener", zap.String("chain", cf.Name), zap.Stringer("listen", r.fronts.coapAddr))
	}
	return nil
}

// stopAdapters closes the MQTT and CoAP listeners and detaches the adapters.
func (r *Runner) stopAdapters() {
	if r.fronts.mqtt != nil {
		r.fronts.mqtt.Close()
	}
	if r.fronts.coap != nil {
		r.fronts.coap.Close()
	}
	if r.Adapters != nil {
		r.Adapters.Close()
	}
}

// MQTTAddr is the MQTT listener's address ("" if none).
func (r *Runner) MQTTAddr() string {
	if r.fronts.mqttAddr == nil {
		return ""
	}
	return r.fronts.mqttAddr.String()
}

// CoAPAddr is the CoAP listener's address ("" if none).
func (r *Runner) CoAPAddr() string {
	if r.fronts.coapAddr == nil {
		return ""
	}
	return r.fronts.coapAddr.String()
}
